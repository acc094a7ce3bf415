"""The inference pool: the only code that talks to inference servers.

Callers use ``chat.stream_chat`` / ``chat.complete_chat`` and ``embeddings.embed`` /
``embeddings.embed_sync``; docs/inference.md describes the policy and maps the modules.
"""
