"""Integration tests and tools that drive real containerd, runc and ctr."""
