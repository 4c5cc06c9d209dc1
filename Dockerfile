# Herald: one static-ish binary on a slim Debian base.
#   docker build -t herald .
#   docker run -p 8080:8080 -e HERALD_LISTEN=0.0.0.0:8080 herald serve --dev
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin herald

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/herald --create-home herald
COPY --from=build /src/target/release/herald /usr/local/bin/herald
USER herald
ENV HERALD_DATA_DIR=/var/lib/herald \
    HERALD_LISTEN=0.0.0.0:8080 \
    HERALD_API_LISTEN=0.0.0.0:8080 \
    HERALD_WS_LISTEN=0.0.0.0:8081
VOLUME /var/lib/herald
EXPOSE 8080 8081
ENTRYPOINT ["herald"]
CMD ["serve"]
