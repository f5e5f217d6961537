"""`pywasm run`: a client of containerd's gRPC API (pywasmd.client.containerd), the OCI spec it
builds (pywasmd.client.spec) and the command itself (pywasmd.client.run)."""
