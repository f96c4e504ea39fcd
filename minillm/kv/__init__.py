"""KV cache layouts: contiguous rows (chapter 1); paged blocks and prefix caches arrive in chapters 2-3."""
