# syntax=docker/dockerfile:1
# Build: docker build -t workspace-access-operator .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Cache dependencies separately from the sources.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && cp target/release/workspace-access-operator /workspace-access-operator

# distroless/cc has glibc, CA certificates and a nonroot user (65532), and nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /workspace-access-operator /usr/local/bin/workspace-access-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/workspace-access-operator"]
CMD ["run"]
