#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <string.h>
#include "system_shim.h"

int gp_set_malloc_arena_max(int arenas) {
    return mallopt(M_ARENA_MAX, arenas);
}

int gp_set_thread_name(const char *name) {
    char truncated[16];
    strncpy(truncated, name, sizeof truncated - 1);
    truncated[sizeof truncated - 1] = '\0';
    return pthread_setname_np(pthread_self(), truncated);
}
