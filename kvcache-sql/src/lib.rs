//! The sql backend of kvcache (in progress).
