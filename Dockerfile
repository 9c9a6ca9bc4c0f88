# quayside and the whoami example server, as small static images.
#   docker build --target quayside -t quayside:local .
#   docker build --target whoami   -t quayside-whoami:local .
# No network for the build stage? Use scripts/build-images.sh, which builds the same images
# from binaries compiled on the host.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked \
      --target x86_64-unknown-linux-gnu -p quayside -p whoami

FROM scratch AS whoami
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/whoami /whoami
EXPOSE 80
ENTRYPOINT ["/whoami"]

FROM scratch AS quayside
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/quayside /quayside
EXPOSE 8080 8001
VOLUME /data
ENTRYPOINT ["/quayside"]
# The admin API stays on the container's loopback unless told otherwise: beyond it, it needs
# a token (QUAYSIDE_ADMIN_LISTEN=0.0.0.0:8001 with QUAYSIDE_ADMIN_TOKEN, as docker-compose.yml).
CMD ["--state", "/data/state.json"]
HEALTHCHECK --interval=10s --timeout=6s --start-period=5s CMD ["/quayside", "healthcheck"]
