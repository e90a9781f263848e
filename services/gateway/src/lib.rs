//! The HTTP gateway: Segment-style tracking endpoints and REST/JSON over the gRPC services
