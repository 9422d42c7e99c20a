//! The redis backend of kvcache (in progress).
