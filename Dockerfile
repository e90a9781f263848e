# syntax=docker/dockerfile:1

# ---------------------------------------------------------------- build
# The dependency layer is built from the manifests and empty crate sources, so
# it is reused until Cargo.toml, Cargo.lock or proto/ change; a source change
# rebuilds only the workspace crates.
FROM rust:1.95-bookworm AS build
WORKDIR /src

COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml bench/
COPY services/decisioning/Cargo.toml services/decisioning/
COPY services/gamification/Cargo.toml services/gamification/
COPY services/gateway/Cargo.toml services/gateway/
COPY services/ingestion/Cargo.toml services/ingestion/
COPY services/profile/Cargo.toml services/profile/
COPY services/recommendations/Cargo.toml services/recommendations/
COPY services/surveys/Cargo.toml services/surveys/
COPY shared/bus/Cargo.toml shared/bus/
COPY shared/cache/Cargo.toml shared/cache/
COPY shared/proto/Cargo.toml shared/proto/build.rs shared/proto/
COPY shared/rules/Cargo.toml shared/rules/
COPY shared/runtime/Cargo.toml shared/runtime/
COPY shared/store/Cargo.toml shared/store/
COPY proto proto

RUN for crate in bench services/decisioning services/gamification services/gateway \
        services/ingestion services/profile services/recommendations services/surveys \
        shared/bus shared/cache shared/proto shared/rules shared/runtime shared/store; do \
        mkdir -p "$crate/src" && touch "$crate/src/lib.rs"; \
    done \
    && mkdir -p src && echo 'fn main() {}' > src/main.rs \
    && cargo build --release --locked --bin rtim

COPY . .
# COPY keeps the files' own modification times, which can be older than the
# placeholder sources built above; touching them makes cargo rebuild the
# workspace crates instead of keeping the placeholder binary.
RUN find src bench services shared -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin rtim

# ---------------------------------------------------------------- runtime
# Distroless: glibc, libgcc and CA certificates, no shell and no package
# manager. The nonroot variant runs as user and group 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="rtim" \
      org.opencontainers.image.description="Real-time interaction management for e-commerce" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /src/target/release/rtim /usr/local/bin/rtim
# The demo tenant's actions, surveys and point rules, for development clusters.
COPY examples /usr/share/rtim/examples

USER 65532:65532
EXPOSE 8080 50051 50052 50053 50054 50055 50056
ENTRYPOINT ["rtim"]
# A Deployment passes the service name: `serve profile`.
CMD ["serve"]
