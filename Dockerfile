# The nacre binary in a container image, for the CSI driver's controller
# Deployment and node DaemonSet (deploy/kubernetes, image nacre:0.1.0):
#
#   docker build -t nacre:0.1.0 .
#   # then push it where the cluster pulls from, or load it onto the nodes
#   # (kind load docker-image nacre:0.1.0, ctr -n k8s.io images import ...)
#
# Two stages on Debian 12, built from Debian's packages only. No test builds
# this image: the machines that run the tests cannot pull base images. The
# binary it holds is the one `cmake --build build --target nacre` makes, which
# the tests run; tests/integration/deb_test.sh checks that the runtime stage
# below installs every package the binary depends on (dpkg-shlibdeps).
FROM debian:12 AS build
# The build packages of scripts/deps.sh (without its test servers and
# tools), plus gRPC and protobuf for the CSI driver. GoogleTest only because
# the top-level CMakeLists.txt looks for it; no test is built here.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libcurl4-openssl-dev libssl-dev libpugixml-dev nlohmann-json3-dev libspdlog-dev libcli11-dev \
      libgtest-dev libgmock-dev libfuse3-dev prometheus-cpp-dev \
      libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release \
 && cmake --build /build -j"$(nproc)" --target nacre \
 && strip /build/nacre \
 && /build/nacre --version

FROM debian:12-slim
# The shared libraries the binary links (what dpkg-shlibdeps finds for the
# .deb), fuse3 for fusermount3 and /etc/fuse.conf, and the CA certificates
# for HTTPS to S3. mount/umount come with the base image (util-linux).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates fuse3 libfuse3-3 \
      libcurl4 libssl3 libpugixml1v5 libspdlog1.10 libfmt9 \
      libgrpc++1.51 libgrpc29 libprotobuf32 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/nacre /usr/bin/nacre
ENTRYPOINT ["/usr/bin/nacre"]
