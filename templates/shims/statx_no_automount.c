/*
 * Preloaded in every template: Debian's runsc (2022-12) rejects statx() with
 * AT_NO_AUTOMOUNT (EINVAL), which current coreutils always passes, so `ls -l` and `stat`
 * fail on every file. A sandbox has no automounts, so the flag can go.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

struct statx;

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    return (int)syscall(SYS_statx, dirfd, path, flags & ~AT_NO_AUTOMOUNT, mask, buf);
}
