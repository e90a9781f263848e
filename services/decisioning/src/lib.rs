//! The decisioning service
