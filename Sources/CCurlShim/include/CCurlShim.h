#ifndef GPUPLANE_CCURL_SHIM_H
#define GPUPLANE_CCURL_SHIM_H
#include <curl/curl.h>
#endif
