"""Helpers every stage uses: atomic file writes, progress output, device/seed/DDP set-up."""
