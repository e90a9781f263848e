//! The recommendations service
