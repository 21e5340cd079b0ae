"""Media worker: SFU forwarding, server-side mix and recording of voice rooms."""
