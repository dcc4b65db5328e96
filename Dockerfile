# keel as the istio-proxy container image: Node 20, the built proxy, the native addon, and
# iptables for the init step (`keel istio-iptables ...`). Runs as uid/gid 1337 like istio-proxy.
FROM node:20-bookworm-slim AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json ./
COPY scripts ./scripts
COPY native ./native
COPY src ./src
COPY config ./config
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iptables iproute2 ca-certificates && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 1337 istio-proxy && useradd -u 1337 -g 1337 -M -s /usr/sbin/nologin istio-proxy \
 && mkdir -p /etc/istio/proxy && chown 1337:1337 /etc/istio/proxy
WORKDIR /usr/local/lib/keel
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/native/build/Release ./native/build/Release
COPY --from=build /src/config ./config
RUN ln -s /usr/local/lib/keel/dist/src/cli/main.js /usr/local/bin/keel && chmod +x dist/src/cli/main.js
USER 1337:1337
ENTRYPOINT ["keel"]
CMD ["--demo"]
