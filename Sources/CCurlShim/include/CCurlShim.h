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
CURLMcode gp_multi_setopt_ptr(CURLM *handle, CURLMoption option, void *value);
CURLMcode gp_multi_setopt_socket_function(CURLM *handle, curl_socket_callback value);
CURLMcode gp_multi_setopt_timer_function(CURLM *handle, curl_multi_timer_callback value);

/// An epoll set for the sockets libcurl asks a `curl_multi` handle's owner to watch
/// (`CURLMOPT_SOCKETFUNCTION`), so each wake-up costs the sockets that are ready, not every
/// transfer's. Linux only, like the rest of gpuplane. Returns the epoll descriptor or -1.
int gp_poller_create(void);
/// Watches `fd` for reading when `in`, writing when `out` (what `CURL_POLL_*` asks), adding it
/// or changing what it is watched for. Returns 0 or -1 with errno set.
int gp_poller_watch(int poller, int fd, int in, int out);
/// Stops watching `fd` (`CURL_POLL_REMOVE`); an fd that is not watched is not an error.
void gp_poller_forget(int poller, int fd);
/// Waits up to `timeout_ms` (-1: forever) for ready descriptors; stores up to `max` of them in
/// `fds` with what happened as `CURL_CSELECT_*` bits in `flags`. Returns how many (0 when
/// interrupted by a signal) or -1 with errno set.
int gp_poller_wait(int poller, int *fds, int *flags, int max, int timeout_ms);
/// A non-blocking eventfd that wakes the poller when written (``gp_wake``), or -1.
int gp_wake_create(void);
/// Makes `wake` readable; safe from any thread.
void gp_wake(int wake);
/// Consumes the wake-ups `wake` holds.
void gp_wake_drain(int wake);

/// `CURL_GLOBAL_ALL`, which Swift cannot import as a macro.
long gp_curl_global_all(void);
/// The `CURLMsg` result of a done message (`msg->data.result`).
CURLcode gp_curl_msg_result(const CURLMsg *msg);

#endif
