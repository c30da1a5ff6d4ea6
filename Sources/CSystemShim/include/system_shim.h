#ifndef GPUPLANE_SYSTEM_SHIM_H
#define GPUPLANE_SYSTEM_SHIM_H

/// Caps glibc's malloc arenas (mallopt M_ARENA_MAX); returns 1 on success.
int gp_set_malloc_arena_max(int arenas);

/// Names the calling thread (pthread_setname_np, at most 15 bytes kept); returns 0 on success.
int gp_set_thread_name(const char *name);

#endif
