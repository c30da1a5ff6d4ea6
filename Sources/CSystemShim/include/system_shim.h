#ifndef GPUPLANE_SYSTEM_SHIM_H
#define GPUPLANE_SYSTEM_SHIM_H

/// Caps glibc's malloc arenas (mallopt M_ARENA_MAX); returns 1 on success.
int gp_set_malloc_arena_max(int arenas);

/// Hands the free pages of every malloc arena back to the kernel (glibc malloc_trim(0));
/// returns 1 when some memory was released.
int gp_malloc_trim(void);

/// What glibc's malloc holds, over every arena (mallinfo2): `in_use`, the bytes of chunks
/// allocated now (mmapped ones included); `free_bytes`, the bytes of free chunks it keeps
/// (their pages may have been handed back by malloc_trim).
void gp_heap_usage(unsigned long long *in_use, unsigned long long *free_bytes);

/// Makes stdout line-buffered (setvbuf _IOLBF), so a process killed mid-run leaves every line
/// it printed where its output goes (a file or a pipe buffers whole blocks otherwise); returns
/// 0 on success. Call before anything is printed.
int gp_line_buffer_stdout(void);

/// Names the calling thread (pthread_setname_np, at most 15 bytes kept); returns 0 on success.
int gp_set_thread_name(const char *name);

#include <sys/types.h>

/// posix_spawn (posix_spawnp when `search`) of `path` with `in_fd`, `out_fd` and `err_fd` as its
/// standard streams and no other descriptor of this process, signal mask empty and the usual
/// signals at their defaults, in a process group of its own. Returns 0 or an errno value.
int gp_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], int search,
             int in_fd, int out_fd, int err_fd);

#endif
