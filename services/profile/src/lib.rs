//! The profile service
