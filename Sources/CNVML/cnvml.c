// CNVML has no code: the header only declares NVML's types. These checks pin the layouts that
// must match libnvidia-ml.so.1 on the 64-bit Linux hosts gpuplane supports.
#include "CNVML.h"
#include <stddef.h>

_Static_assert(sizeof(nvmlReturn_t) == 4, "nvmlReturn_t is a C int-sized enum");
_Static_assert(sizeof(nvmlMemory_t) == 24, "nvmlMemory_t v1 is three 64-bit counters");
_Static_assert(sizeof(nvmlUtilization_t) == 8, "nvmlUtilization_t is two unsigned ints");
_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t v3 is 16 + 5*4 + 32 bytes");
_Static_assert(offsetof(nvmlPciInfo_t, busId) == 36, "busId follows the five unsigned ints");
_Static_assert(sizeof(void *) != 8 || sizeof(nvmlEventData_t) == 32,
               "nvmlEventData_t is pointer + 2*u64 + 2*u32 on LP64");
_Static_assert(sizeof(void *) != 8 || offsetof(nvmlEventData_t, gpuInstanceId) == 24,
               "gpuInstanceId follows eventData");
