#include "CCurlShim.h"

CURLcode gp_easy_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}
CURLcode gp_easy_setopt_ptr(CURL *handle, CURLoption option, const void *value) {
    return curl_easy_setopt(handle, option, value);
}
CURLcode gp_easy_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}
CURLcode gp_easy_setopt_write_function(CURL *handle, CURLoption option, gp_curl_write_callback value) {
    return curl_easy_setopt(handle, option, value);
}
CURLcode gp_easy_setopt_xferinfo_function(CURL *handle, CURLoption option,
                                          gp_curl_xferinfo_callback value) {
    return curl_easy_setopt(handle, option, value);
}
CURLcode gp_easy_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}
CURLcode gp_easy_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *value) {
    return curl_easy_getinfo(handle, info, value);
}
CURLcode gp_easy_getinfo_double(CURL *handle, CURLINFO info, double *value) {
    return curl_easy_getinfo(handle, info, value);
}
CURLcode gp_easy_getinfo_string(CURL *handle, CURLINFO info, char **value) {
    return curl_easy_getinfo(handle, info, value);
}
CURLMcode gp_multi_setopt_long(CURLM *handle, CURLMoption option, long value) {
    return curl_multi_setopt(handle, option, value);
}
long gp_curl_global_all(void) { return CURL_GLOBAL_ALL; }
CURLcode gp_curl_msg_result(const CURLMsg *msg) { return msg->data.result; }
