# keel as Istio's proxy image (both the istio-proxy sidecar and the istio-init container) and as a
# standalone proxy. Build: docker build -t keel .  Point Istio at it with
#   --set values.global.proxy.image=<registry>/keel:<tag> --set values.global.proxy_init.image=<registry>/keel:<tag>
# The injector passes only arguments, so the entrypoint takes pilot-agent's:
#   proxy sidecar --domain ... --proxyLogLevel=warning ...   (istio-proxy)
#   istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT ...  (istio-init, run as root with NET_ADMIN)
#   wait                                                     (postStart hook, via /usr/local/bin/pilot-agent)

# --- build: compilers and dev dependencies stay in this stage ---
FROM node:20-bookworm-slim AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json ./
COPY scripts ./scripts
COPY native ./native
COPY src ./src
COPY config ./config
# npm ci runs `prepare`: tsc to dist/ and the N-API addon to native/build/Release
RUN npm ci --no-audit --no-fund \
 && npm prune --omit=dev --no-audit --no-fund \
 && test -f dist/src/cli/main.js \
 && mkdir -p native/build/Release

# --- runtime: Node 20, iptables for istio-init, no build tools ---
FROM node:20-bookworm-slim
ENV NODE_ENV=production
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 1337 istio-proxy \
 && useradd -u 1337 -g 1337 -M -d /etc/istio/proxy -s /usr/sbin/nologin istio-proxy \
 && mkdir -p /etc/istio/proxy /etc/istio/pod /var/lib/istio/data /var/run/secrets/istio /var/run/secrets/workload-spiffe-credentials /etc/certs \
 && chown -R 1337:1337 /etc/istio/proxy /var/lib/istio/data /var/run/secrets/workload-spiffe-credentials
WORKDIR /usr/local/lib/keel
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/native/build/Release ./native/build/Release
COPY --from=build /src/config ./config
RUN chmod +x dist/src/cli/main.js \
 && ln -s /usr/local/lib/keel/dist/src/cli/main.js /usr/local/bin/keel \
 && ln -s /usr/local/lib/keel/dist/src/cli/main.js /usr/local/bin/pilot-agent
# 15001 outbound capture, 15006 inbound capture, 15008 HBONE, 15020 agent status and merged
# metrics, 15021 readiness, 15090 Envoy Prometheus. Admin (15000) is loopback only.
EXPOSE 15001 15006 15008 15020 15021 15090
# A young generation of at most 2 x 2 MiB: keel's requests leave almost nothing alive, so small
# scavenges cost no throughput and keep ~10 MB of RSS off every sidecar (bench/README.md).
# Overridable per pod through the environment.
ENV NODE_OPTIONS=--max-semi-space-size=2
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/keel"]
CMD ["--demo"]
