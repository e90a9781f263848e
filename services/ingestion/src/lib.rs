//! The ingestion service
