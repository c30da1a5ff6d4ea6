#ifndef GPUPLANE_CCURL_SHIM_H
#define GPUPLANE_CCURL_SHIM_H
#include <curl/curl.h>

/// Typed, non-variadic wrappers for libcurl's variadic option and info calls, so Swift can call
/// them. Only the CurlHTTP module uses these.

typedef size_t (*gp_curl_write_callback)(char *ptr, size_t size, size_t nmemb, void *userdata);
typedef int (*gp_curl_xferinfo_callback)(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
                                         curl_off_t ultotal, curl_off_t ulnow);

CURLcode gp_easy_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode gp_easy_setopt_ptr(CURL *handle, CURLoption option, const void *value);
CURLcode gp_easy_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value);
CURLcode gp_easy_setopt_write_function(CURL *handle, CURLoption option, gp_curl_write_callback value);
CURLcode gp_easy_setopt_xferinfo_function(CURL *handle, CURLoption option,
                                          gp_curl_xferinfo_callback value);

CURLcode gp_easy_getinfo_long(CURL *handle, CURLINFO info, long *value);
CURLcode gp_easy_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *value);
CURLcode gp_easy_getinfo_double(CURL *handle, CURLINFO info, double *value);
CURLcode gp_easy_getinfo_string(CURL *handle, CURLINFO info, char **value);

CURLMcode gp_multi_setopt_long(CURLM *handle, CURLMoption option, long value);

/// `CURL_GLOBAL_ALL`, which Swift cannot import as a macro.
long gp_curl_global_all(void);
/// The `CURLMsg` result of a done message (`msg->data.result`).
CURLcode gp_curl_msg_result(const CURLMsg *msg);

#endif
