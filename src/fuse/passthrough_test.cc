// FUSE kernel passthrough's protocol handling (fuse/passthrough.h): parsing the
// raw INIT request, patching the raw INIT reply, and the Passthrough class's
// custom-I/O hooks over pipes standing in for /dev/fuse. No kernel FUSE.
#include "fuse/passthrough.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace nacre::fuse {
namespace {

// The protocol's numbers, spelled out here independently of passthrough.cc.
constexpr uint32_t kOpInit = 26;
constexpr uint32_t kOpLookup = 1;
constexpr uint32_t kInitExt = 1u << 30;
constexpr uint32_t kWritebackCache = 1u << 16;
constexpr uint32_t kPassthroughFlag2 = 0x20;  // FUSE_PASSTHROUGH: bit 37, bit 5 of flags2
constexpr size_t kInHeader = 40;
constexpr size_t kInitInSize = 64;  // fuse_init_in of protocol 7.36+
constexpr size_t kOutHeader = 16;
constexpr size_t kInitOutSize = 64;

template <typename T>
void put(std::vector<char>& buf, size_t off, T v) {
  std::memcpy(buf.data() + off, &v, sizeof v);
}

template <typename T>
T get(const void* base, size_t off) {
  T v;
  std::memcpy(&v, static_cast<const char*>(base) + off, sizeof v);
  return v;
}

// A fuse_in_header followed by a fuse_init_in.
std::vector<char> init_request(uint64_t unique, uint32_t flags, uint32_t flags2,
                               uint32_t opcode = kOpInit, uint32_t minor = 40) {
  std::vector<char> buf(kInHeader + kInitInSize, '\0');
  put<uint32_t>(buf, 0, static_cast<uint32_t>(buf.size()));
  put<uint32_t>(buf, 4, opcode);
  put<uint64_t>(buf, 8, unique);
  put<uint64_t>(buf, 16, 0);  // nodeid
  put<uint32_t>(buf, kInHeader + 0, 7);
  put<uint32_t>(buf, kInHeader + 4, minor);
  put<uint32_t>(buf, kInHeader + 8, 1u << 17);  // max_readahead
  put<uint32_t>(buf, kInHeader + 12, flags);
  put<uint32_t>(buf, kInHeader + 16, flags2);
  return buf;
}

// An INIT reply as libfuse hands it to the custom writev: header and fuse_init_out.
struct InitReply {
  InitReply(uint64_t unique, int32_t error, uint32_t flags, uint32_t flags2 = 0,
            uint16_t max_stack_depth = 0)
      : header(kOutHeader, '\0'), body(kInitOutSize, '\0') {
    put<uint32_t>(header, 0, static_cast<uint32_t>(kOutHeader + kInitOutSize));
    put<int32_t>(header, 4, error);
    put<uint64_t>(header, 8, unique);
    put<uint32_t>(body, 0, 7);                 // major
    put<uint32_t>(body, 4, 38);                // minor
    put<uint32_t>(body, 8, 1u << 20);          // max_readahead
    put<uint32_t>(body, 12, flags);            // flags
    put<uint16_t>(body, 16, 12);               // max_background
    put<uint16_t>(body, 18, 9);                // congestion_threshold
    put<uint32_t>(body, 20, 1u << 20);         // max_write
    put<uint32_t>(body, 24, 1);                // time_gran
    put<uint16_t>(body, 28, 32);               // max_pages
    put<uint32_t>(body, 32, flags2);           // flags2
    put<uint32_t>(body, 36, max_stack_depth);  // max_stack_depth
    iov[0] = {header.data(), header.size()};
    iov[1] = {body.data(), body.size()};
  }
  uint32_t flags() const { return get<uint32_t>(body.data(), 12); }
  uint32_t flags2() const { return get<uint32_t>(body.data(), 32); }
  uint32_t stack_depth() const { return get<uint32_t>(body.data(), 36); }

  std::vector<char> header;
  std::vector<char> body;
  std::array<iovec, 2> iov{};
};

// A pipe closed at the end of the test.
struct Pipe {
  Pipe() { EXPECT_EQ(::pipe2(fd, O_CLOEXEC | O_NONBLOCK), 0); }
  ~Pipe() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
  int read_end() const { return fd[0]; }
  int write_end() const { return fd[1]; }
  // Everything written so far.
  std::vector<char> drain() const {
    std::vector<char> out(1 << 16);
    ssize_t n = ::read(fd[0], out.data(), out.size());
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return out;
  }
  int fd[2] = {-1, -1};
};

// Feeds `request` to pt.read_request through a pipe, as libfuse reads /dev/fuse.
void feed(Passthrough& pt, const std::vector<char>& request) {
  Pipe p;
  ASSERT_EQ(::write(p.write_end(), request.data(), request.size()),
            static_cast<ssize_t>(request.size()));
  std::vector<char> buf(1 << 16);
  ssize_t n = pt.read_request(p.read_end(), buf.data(), buf.size());
  ASSERT_EQ(n, static_cast<ssize_t>(request.size()));
  EXPECT_EQ(std::memcmp(buf.data(), request.data(), request.size()), 0)
      << "read_request hands libfuse the bytes unchanged";
}

// Sends `reply` through pt.write_reply to a pipe; returns what reached the "device".
std::vector<char> send(Passthrough& pt, InitReply& reply) {
  Pipe dev;
  ssize_t n = pt.write_reply(dev.write_end(), reply.iov.data(), 2);
  EXPECT_EQ(n, static_cast<ssize_t>(kOutHeader + kInitOutSize));
  return dev.drain();
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ---------------------------------------------------------------------------
// parse_init_request

TEST(ParseInitRequest, InitWithInitExtAndPassthroughFlagOffersPassthrough) {
  auto buf = init_request(77, kInitExt | 1u, kPassthroughFlag2, kOpInit, 40);
  InitRequest r = parse_init_request(buf.data(), buf.size());
  EXPECT_TRUE(r.is_init);
  EXPECT_EQ(r.unique, 77u);
  EXPECT_EQ(r.minor, 40u);
  EXPECT_TRUE(r.offers_passthrough);
}

TEST(ParseInitRequest, InitWithoutInitExtIgnoresFlags2) {
  auto buf = init_request(5, 0xffffffffu & ~kInitExt, kPassthroughFlag2);
  InitRequest r = parse_init_request(buf.data(), buf.size());
  EXPECT_TRUE(r.is_init);
  EXPECT_EQ(r.unique, 5u);
  EXPECT_FALSE(r.offers_passthrough) << "flags2 means nothing without FUSE_INIT_EXT";
}

TEST(ParseInitRequest, InitWithInitExtButNoPassthroughBitDoesNotOfferIt) {
  auto buf = init_request(6, kInitExt, 0xffffffffu & ~kPassthroughFlag2, kOpInit, 38);
  InitRequest r = parse_init_request(buf.data(), buf.size());
  EXPECT_TRUE(r.is_init);
  EXPECT_EQ(r.minor, 38u);
  EXPECT_FALSE(r.offers_passthrough);
}

TEST(ParseInitRequest, OtherOpcodeIsNotInit) {
  auto buf = init_request(9, kInitExt, kPassthroughFlag2, kOpLookup);
  InitRequest r = parse_init_request(buf.data(), buf.size());
  EXPECT_FALSE(r.is_init);
  EXPECT_FALSE(r.offers_passthrough);
  EXPECT_EQ(r.unique, 0u);
}

TEST(ParseInitRequest, ShortBufferIsNotInit) {
  auto buf = init_request(9, kInitExt, kPassthroughFlag2);
  EXPECT_FALSE(parse_init_request(buf.data(), kInHeader).is_init) << "header only";
  EXPECT_FALSE(parse_init_request(buf.data(), kInHeader + 15).is_init) << "flags cut short";
  EXPECT_FALSE(parse_init_request(buf.data(), 0).is_init);
}

TEST(ParseInitRequest, InitCutBeforeFlags2DoesNotOfferPassthrough) {
  // An old kernel's 16-byte fuse_init_in: major, minor, max_readahead, flags.
  auto buf = init_request(3, kInitExt, kPassthroughFlag2);
  InitRequest r = parse_init_request(buf.data(), kInHeader + 16);
  EXPECT_TRUE(r.is_init);
  EXPECT_FALSE(r.offers_passthrough);
}

// ---------------------------------------------------------------------------
// patch_init_reply

TEST(PatchInitReply, RightUniqueAsksForPassthroughAndDropsWritebackCache) {
  const uint32_t others = (1u << 0) | (1u << 3) | (1u << 9) | (1u << 25);
  InitReply reply(42, 0, others | kWritebackCache, /*flags2=*/0x3);
  ASSERT_TRUE(patch_init_reply(reply.iov.data(), 2, 42));
  EXPECT_EQ(reply.flags(), others | kInitExt) << "INIT_EXT set, writeback cache off, rest kept";
  EXPECT_EQ(reply.flags2(), 0x3u | kPassthroughFlag2);
  EXPECT_EQ(reply.stack_depth(), 1u);
  // The header and the rest of the body are untouched.
  EXPECT_EQ(get<uint64_t>(reply.header.data(), 8), 42u);
  EXPECT_EQ(get<uint32_t>(reply.header.data(), 0), kOutHeader + kInitOutSize);
  EXPECT_EQ(get<uint32_t>(reply.body.data(), 20), 1u << 20);
  EXPECT_EQ(get<uint16_t>(reply.body.data(), 28), 32u);
}

TEST(PatchInitReply, ReplyToAnotherRequestIsUntouched) {
  InitReply reply(43, 0, kWritebackCache);
  const auto before = reply.body;
  EXPECT_FALSE(patch_init_reply(reply.iov.data(), 2, 42));
  EXPECT_EQ(reply.body, before);
}

TEST(PatchInitReply, ErrorReplyIsUntouched) {
  InitReply reply(42, -EPROTO, kWritebackCache);
  const auto before = reply.body;
  EXPECT_FALSE(patch_init_reply(reply.iov.data(), 2, 42));
  EXPECT_EQ(reply.body, before);
}

TEST(PatchInitReply, FewerThanTwoIovecsIsUntouched) {
  InitReply reply(42, 0, kWritebackCache);
  const auto before = reply.body;
  EXPECT_FALSE(patch_init_reply(reply.iov.data(), 1, 42));
  EXPECT_FALSE(patch_init_reply(reply.iov.data(), 0, 42));
  EXPECT_EQ(reply.body, before);
}

TEST(PatchInitReply, TooShortBodyOrHeaderIsUntouched) {
  InitReply reply(42, 0, kWritebackCache);
  const auto before = reply.body;
  reply.iov[1].iov_len = 36 + 3;  // max_stack_depth does not fit
  EXPECT_FALSE(patch_init_reply(reply.iov.data(), 2, 42));
  EXPECT_EQ(reply.body, before);
  reply.iov[1].iov_len = kInitOutSize;
  reply.iov[0].iov_len = kOutHeader - 1;
  EXPECT_FALSE(patch_init_reply(reply.iov.data(), 2, 42));
  EXPECT_EQ(reply.body, before);
}

TEST(PatchInitReply, SmallestBodyThatHoldsStackDepthIsPatched) {
  InitReply reply(42, 0, 0);
  reply.iov[1].iov_len = 40;
  ASSERT_TRUE(patch_init_reply(reply.iov.data(), 2, 42));
  EXPECT_EQ(reply.stack_depth(), 1u);
  EXPECT_EQ(reply.flags2(), kPassthroughFlag2);
}

// ---------------------------------------------------------------------------
// Passthrough

TEST(Passthrough, AcquireWhenNotEnabledIsNotSupported) {
  Passthrough pt(true);
  EXPECT_FALSE(pt.enabled());
  auto id = pt.acquire(1, 2, 0);
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, ErrorCode::kNotSupported);
}

TEST(Passthrough, ReleaseOfUnknownHandleIsANoOp) {
  Passthrough pt(true);
  pt.release(12345);
  pt.release(0);
  EXPECT_FALSE(pt.enabled());
  auto id = pt.acquire(1, 2, 0);
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, ErrorCode::kNotSupported);
}

TEST(Passthrough, ModeBeforeInitIsCached) {
  Passthrough pt(true);
  EXPECT_TRUE(pt.mode_description().starts_with("cached")) << pt.mode_description();
  Passthrough off(false);
  EXPECT_TRUE(off.mode_description().starts_with("cached")) << off.mode_description();
}

TEST(Passthrough, OffByOptionStaysCachedAndLeavesTheInitReplyAlone) {
  Passthrough pt(/*wanted=*/false);
  feed(pt, init_request(11, kInitExt, kPassthroughFlag2));
  const std::string mode = pt.mode_description();
  EXPECT_TRUE(mode.starts_with("cached")) << mode;
  EXPECT_TRUE(contains(mode, "--passthrough off")) << mode;
  InitReply reply(11, 0, kWritebackCache | 1u);
  const auto body = reply.body;
  auto wire = send(pt, reply);
  EXPECT_FALSE(pt.enabled());
  ASSERT_EQ(wire.size(), kOutHeader + kInitOutSize);
  EXPECT_TRUE(std::equal(body.begin(), body.end(), wire.begin() + kOutHeader))
      << "the INIT reply goes out as libfuse made it";
  EXPECT_TRUE(pt.mode_description().starts_with("cached"));
}

TEST(Passthrough, KernelWithoutPassthroughStaysCached) {
  Passthrough pt(/*wanted=*/true);
  feed(pt, init_request(12, kInitExt, 0));
  EXPECT_TRUE(contains(pt.mode_description(), "does not offer")) << pt.mode_description();
  InitReply reply(12, 0, 0);
  send(pt, reply);
  EXPECT_FALSE(pt.enabled());
  EXPECT_EQ(reply.flags2(), 0u);
  EXPECT_EQ(reply.stack_depth(), 0u);
}

TEST(Passthrough, NonInitRequestsChangeNothing) {
  Passthrough pt(/*wanted=*/true);
  feed(pt, init_request(13, kInitExt, kPassthroughFlag2, kOpLookup));
  EXPECT_TRUE(pt.mode_description().starts_with("cached"));
  InitReply reply(13, 0, kWritebackCache);
  send(pt, reply);
  EXPECT_FALSE(pt.enabled());
  EXPECT_EQ(reply.flags(), kWritebackCache);
}

// Tests run as root here; whether INIT turns passthrough on follows CAP_SYS_ADMIN.
TEST(Passthrough, WantedAndOfferedFollowsCapSysAdmin) {
  const bool cap = have_cap_sys_admin();
  Passthrough pt(/*wanted=*/true);
  feed(pt, init_request(21, kInitExt, kPassthroughFlag2));
  if (cap) {
    EXPECT_TRUE(pt.mode_description().starts_with("passthrough")) << pt.mode_description();
  } else {
    EXPECT_TRUE(contains(pt.mode_description(), "CAP_SYS_ADMIN")) << pt.mode_description();
  }
  EXPECT_FALSE(pt.enabled()) << "not before the INIT reply is sent";

  // A reply to some other request first: neither patched nor enabling.
  InitReply other(20, 0, kWritebackCache);
  send(pt, other);
  EXPECT_EQ(other.flags(), kWritebackCache);
  EXPECT_FALSE(pt.enabled());

  InitReply reply(21, 0, kWritebackCache | 1u);
  auto wire = send(pt, reply);
  ASSERT_EQ(wire.size(), kOutHeader + kInitOutSize);
  const uint32_t wire_flags = get<uint32_t>(wire.data(), kOutHeader + 12);
  const uint32_t wire_flags2 = get<uint32_t>(wire.data(), kOutHeader + 32);
  const uint32_t wire_depth = get<uint32_t>(wire.data(), kOutHeader + 36);
  EXPECT_EQ(pt.enabled(), cap);
  if (cap) {
    EXPECT_EQ(wire_flags, kInitExt | 1u) << "the patched reply is what reaches the device";
    EXPECT_EQ(wire_flags2, kPassthroughFlag2);
    EXPECT_EQ(wire_depth, 1u);
    EXPECT_TRUE(pt.mode_description().starts_with("passthrough")) << pt.mode_description();
    // Only the one INIT reply is patched.
    InitReply again(21, 0, kWritebackCache);
    send(pt, again);
    EXPECT_EQ(again.flags(), kWritebackCache);
  } else {
    EXPECT_EQ(wire_flags, kWritebackCache | 1u);
    EXPECT_EQ(wire_flags2, 0u);
    EXPECT_TRUE(pt.mode_description().starts_with("cached")) << pt.mode_description();
  }
}

TEST(Passthrough, ErrorReplyToInitDoesNotEnable) {
  Passthrough pt(/*wanted=*/true);
  feed(pt, init_request(31, kInitExt, kPassthroughFlag2));
  InitReply reply(31, -EPROTO, 0);
  send(pt, reply);
  EXPECT_FALSE(pt.enabled());
  EXPECT_EQ(reply.flags2(), 0u);
}

// With passthrough on, a device that refuses backing files (a pipe answers the
// ioctl ENOTTY) turns it off for the mount; without CAP_SYS_ADMIN it never was on.
TEST(Passthrough, DeviceRefusingBackingFilesTurnsPassthroughOff) {
  const bool cap = have_cap_sys_admin();
  Passthrough pt(/*wanted=*/true);
  Pipe dev;
  pt.set_device_fd(dev.write_end());
  feed(pt, init_request(41, kInitExt, kPassthroughFlag2));
  InitReply reply(41, 0, 0);
  send(pt, reply);
  ASSERT_EQ(pt.enabled(), cap);
  int file = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(file, 0);
  auto id = pt.acquire(7, 100, file);
  ::close(file);
  ASSERT_FALSE(id);
  if (cap) {
    EXPECT_EQ(id.error().code, ErrorCode::kIo) << id.error().describe();
    EXPECT_FALSE(pt.enabled()) << "ENOTTY: the kernel cannot take backing files";
    EXPECT_TRUE(contains(pt.mode_description(), "refused")) << pt.mode_description();
  } else {
    EXPECT_EQ(id.error().code, ErrorCode::kNotSupported);
  }
  // Either way the failed handle is not tracked: a later acquire is refused as off.
  pt.release(7);
  auto again = pt.acquire(8, 100, 0);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kNotSupported);
}

// A bad device fd (EBADF) fails the open but is no reason to turn passthrough off.
TEST(Passthrough, TransientBackingOpenFailureKeepsPassthroughOn) {
  const bool cap = have_cap_sys_admin();
  Passthrough pt(/*wanted=*/true);  // no device fd set: -1
  feed(pt, init_request(51, kInitExt, kPassthroughFlag2));
  InitReply reply(51, 0, 0);
  send(pt, reply);
  ASSERT_EQ(pt.enabled(), cap);
  auto id = pt.acquire(1, 5, 0);
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, cap ? ErrorCode::kIo : ErrorCode::kNotSupported)
      << id.error().describe();
  EXPECT_EQ(pt.enabled(), cap);
}

TEST(HaveCapSysAdmin, MatchesTheEffectiveCapabilitySet) {
  // Cross-check against a reading of /proc/self/status done here.
  FILE* f = std::fopen("/proc/self/status", "r");
  ASSERT_NE(f, nullptr);
  char line[256];
  bool found = false, expected = false;
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, "CapEff:", 7) == 0) {
      unsigned long long caps = std::strtoull(line + 7, nullptr, 16);
      expected = (caps >> 21) & 1;
      found = true;
    }
  }
  std::fclose(f);
  ASSERT_TRUE(found);
  EXPECT_EQ(have_cap_sys_admin(), expected);
}

}  // namespace
}  // namespace nacre::fuse
