# icloud-bridge as a container image.
#
#   docker build -t icloud-bridge .
#   docker run -d --name icloud-bridge -p 8443:8443 -p 127.0.0.1:8008:8008 \
#     -v icloud-bridge-data:/data -v "$PWD/config:/config:ro" icloud-bridge
#
# Devices on the network use HTTPS on port 8443 (the local CA is made in /data/certs on the
# first start; devices trust its ca.pem, whose fingerprint the log and the status page show).
# Plain HTTP (8008) is for this host only: publish it on 127.0.0.1 as above, never on the
# LAN, since every device login would cross the network in clear. Inside the container the
# bridge must listen on 0.0.0.0 for Docker's port mapping to reach it, hence
# ICLOUD_BRIDGE_ALLOW_PLAINTEXT_LAN=true below: the host-side publish decides who can reach it.
#
# The config is read from /config/icloud-bridge.toml if present (built-in defaults
# otherwise); state, logins and the vault live in the /data volume. The app-specific
# password can come from a Docker secret: `password_file = "/run/secrets/icloud_app_password"`.
# Manage logins and the password with the same binary:
#   docker exec -it icloud-bridge icloud-bridge client add phone
#   docker exec -i icloud-bridge icloud-bridge reconnect --password-stdin <<< 'abcd-efgh-ijkl-mnop'

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY standin ./standin
COPY src ./src
COPY config ./config
RUN cargo build --release --locked --bin icloud-bridge \
 && strip target/release/icloud-bridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin icloud-bridge \
 && mkdir -p /data /config \
 && chown icloud-bridge:icloud-bridge /data
COPY --from=build /src/target/release/icloud-bridge /usr/local/bin/icloud-bridge
COPY config/icloud-bridge.example.toml /usr/share/doc/icloud-bridge/icloud-bridge.example.toml
# Relative `config/icloud-bridge.toml` resolves against the working directory "/".
WORKDIR /
ENV ICLOUD_BRIDGE_LISTEN=0.0.0.0:8008 \
    ICLOUD_BRIDGE_TLS_LISTEN=0.0.0.0:8443 \
    ICLOUD_BRIDGE_CERTS_DIR=/data/certs \
    ICLOUD_BRIDGE_ALLOW_PLAINTEXT_LAN=true \
    ICLOUD_BRIDGE_DATA_DIR=/data \
    ICLOUD_BRIDGE_LOG=info
USER icloud-bridge
VOLUME ["/data"]
EXPOSE 8443 8008
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/icloud-bridge"]
CMD ["serve"]
