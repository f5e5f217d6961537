"""pywasmd: a containerd runtime v2 shim (io.containerd.pywasm.v1) for WebAssembly workloads."""

__version__ = "0.1.0"
