"""HTTP functions: a WASI p1 module served as CGI, a fresh instance per request (docs/http.md)."""
