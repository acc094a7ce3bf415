"""Replies: the claim protocol (``claim``), the lock and lease a running reply holds (``hold``), its
stream to the sockets (``stream``) and the reply itself (``engine``)."""
