"""Raw-client smoke tests: each broker does one real round trip (no mqkit code)."""
