//! The file backend of kvcache (in progress).
