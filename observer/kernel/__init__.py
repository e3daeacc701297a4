"""The kernel side: BTF offsets, the probes' loader (the only bcc importer), the wire format."""
