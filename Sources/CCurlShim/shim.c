#include "CCurlShim.h"
#include <errno.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

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
CURLMcode gp_multi_setopt_ptr(CURLM *handle, CURLMoption option, void *value) {
    return curl_multi_setopt(handle, option, value);
}
CURLMcode gp_multi_setopt_socket_function(CURLM *handle, curl_socket_callback value) {
    return curl_multi_setopt(handle, CURLMOPT_SOCKETFUNCTION, value);
}
CURLMcode gp_multi_setopt_timer_function(CURLM *handle, curl_multi_timer_callback value) {
    return curl_multi_setopt(handle, CURLMOPT_TIMERFUNCTION, value);
}

int gp_poller_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int gp_poller_watch(int poller, int fd, int in, int out) {
    struct epoll_event event = {0};
    event.events = (in ? EPOLLIN : 0) | (out ? EPOLLOUT : 0);
    event.data.fd = fd;
    if (epoll_ctl(poller, EPOLL_CTL_MOD, fd, &event) == 0) return 0;
    if (errno != ENOENT) return -1;
    return epoll_ctl(poller, EPOLL_CTL_ADD, fd, &event);
}

void gp_poller_forget(int poller, int fd) {
    struct epoll_event event = {0};
    (void)epoll_ctl(poller, EPOLL_CTL_DEL, fd, &event);
}

int gp_poller_wait(int poller, int *fds, int *flags, int max, int timeout_ms) {
    struct epoll_event events[256];
    if (max > 256) max = 256;
    int n = epoll_wait(poller, events, max, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) {
        uint32_t e = events[i].events;
        int f = 0;
        if (e & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) f |= CURL_CSELECT_IN;
        if (e & EPOLLOUT) f |= CURL_CSELECT_OUT;
        if (e & EPOLLERR) f |= CURL_CSELECT_ERR;
        fds[i] = events[i].data.fd;
        flags[i] = f;
    }
    return n;
}

int gp_wake_create(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

void gp_wake(int wake) {
    uint64_t one = 1;
    ssize_t written;
    do { written = write(wake, &one, sizeof one); } while (written < 0 && errno == EINTR);
}

void gp_wake_drain(int wake) {
    uint64_t count;
    while (read(wake, &count, sizeof count) > 0) {}
}

long gp_curl_global_all(void) { return CURL_GLOBAL_ALL; }
CURLcode gp_curl_msg_result(const CURLMsg *msg) { return msg->data.result; }
