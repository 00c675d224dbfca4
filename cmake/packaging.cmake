# The Debian package of Nacre, made by CPack from an existing build tree:
#
#   cmake --build build --target nacre
#   (cd build && cpack -G DEB)          # -> build/nacre_0.1.0_amd64.deb
#   apt-get install ./build/nacre_0.1.0_amd64.deb
#
# It holds /usr/bin/nacre (stripped), the Kubernetes manifests under
# /usr/share/nacre/deploy and the documentation under /usr/share/doc/nacre.
# Its dependencies are computed by dpkg-shlibdeps (package dpkg-dev) from the
# libraries the binary links, plus fuse3 for fusermount3.
# tests/integration/deb_test.sh builds, installs and removes it.

# One version for the package and `nacre --version`: project(nacre VERSION ...).
if(NOT PROJECT_VERSION)
  message(FATAL_ERROR "packaging: project(nacre VERSION x.y.z) is needed for the package version")
endif()

# `make install` and cpack install what the build made; they never build
# (without this, cpack's install step would first build every target, tests
# included).
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)

# What the package installs besides the binary (install(TARGETS nacre) is in
# src/cli/CMakeLists.txt). Relative destinations land under /usr.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/ DESTINATION share/nacre/deploy)
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION share/doc/nacre)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION share/doc/nacre FILES_MATCHING PATTERN "*.md")

set(CPACK_PACKAGE_NAME nacre)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "Nacre developers")
set(CPACK_PACKAGE_CONTACT "Nacre developers")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "S3-linked POSIX file system with a node-local cache, and its Kubernetes CSI driver")
# The package's synopsis is the summary; this is the extended description.
string(CONCAT CPACK_PACKAGE_DESCRIPTION
  "Nacre mounts an S3 bucket prefix (AWS S3, Ceph RGW, MinIO...) as a POSIX file\n"
  "system: files are read lazily through a node-local block cache and written back\n"
  "to S3 on close, with FSx for Lustre compatible POSIX metadata. 'nacre csi' is a\n"
  "Kubernetes CSI driver (nacre.csi.dev) that provisions volumes as bucket prefixes\n"
  "and shares one mount and one cache per node; its manifests are in\n"
  "/usr/share/nacre/deploy.")
set(CPACK_STRIP_FILES ON)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)

set(CPACK_DEBIAN_PACKAGE_MAINTAINER "Nacre developers")
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # nacre_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)   # needs dpkg-shlibdeps (dpkg-dev)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "fuse3")

include(CPack)
