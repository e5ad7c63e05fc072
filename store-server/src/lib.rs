//! Store server.
