"""Small helpers shared by the layers above (rate-limited logging, a bounded HTTP server)."""
