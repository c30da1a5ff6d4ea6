// FakeNVML: NVML's symbols over GPUs from a file, with events from another. The file formats
// are documented in include/FakeNVML.h.
//
// Internal helpers are static and no exported function calls another exported one, so a copy
// of this code linked elsewhere in the process can never interpose on this instance.
#define _GNU_SOURCE
#include "FakeNVML.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define FAKE_EXPORT __attribute__((visibility("default")))
#define FAKE_MAX_GPUS 64
#define FAKE_QUEUE_CAPACITY 1024
#define FAKE_PATH_MAX 4096
#define FAKE_LINE_MAX 2048
#define FAKE_POLL_NS 10000000L /* 10 ms */

// ---------------------------------------------------------------------------------------------
// State

struct nvmlDevice_st {
    unsigned int index;
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    char busId[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    char busIdLegacy[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE];
    unsigned int domain, bus, device, function;
    unsigned int pciDeviceId;
    unsigned long long memoryTotal, memoryUsed; /* bytes */
    unsigned int temperature, powerMilliwatts, utilGpu, utilMemory;
    int eccSupported;
    int eccEvents;
    unsigned long long eccCorrected, eccUncorrected;
    int lost;
};

struct nvmlEventSet_st {
    struct nvmlEventSet_st *next;
    unsigned long long masks[FAKE_MAX_GPUS];
    nvmlEventData_t queue[FAKE_QUEUE_CAPACITY];
    unsigned int head, count;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_configured;
static char g_configPath[FAKE_PATH_MAX];
static char g_eventsPath[FAKE_PATH_MAX];
static int g_initCount;
static struct nvmlDevice_st g_gpus[FAKE_MAX_GPUS];
static unsigned int g_gpuCount;
static char g_driverVersion[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE] = "999.99.99-fake";
static char g_activeEventsPath[FAKE_PATH_MAX];
static long long g_eventsOffset;
static struct nvmlEventSet_st *g_sets;

// ---------------------------------------------------------------------------------------------
// Parsing helpers

static void copyString(char *dst, size_t size, const char *src) {
    if (size == 0) return;
    size_t n = strlen(src);
    if (n >= size) n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/// The next whitespace-separated token of *cursor into out, with double quotes removed (so
/// `name="A B"` is one token). Returns 0 at the end of the line.
static int nextToken(const char **cursor, char *out, size_t size) {
    const char *p = *cursor;
    while (*p && isspace((unsigned char)*p)) p++;
    if (!*p) {
        *cursor = p;
        return 0;
    }
    size_t n = 0;
    int quoted = 0;
    while (*p && (quoted || !isspace((unsigned char)*p))) {
        if (*p == '"') {
            quoted = !quoted;
        } else if (n + 1 < size) {
            out[n++] = *p;
        }
        p++;
    }
    out[n] = '\0';
    *cursor = p;
    return 1;
}

static int parseUnsigned(const char *text, int base, unsigned long long *out) {
    if (!*text) return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, base);
    if (errno != 0 || !end || *end != '\0' || text[0] == '-') return 0;
    *out = value;
    return 1;
}

static int parsePci(struct nvmlDevice_st *gpu, const char *text) {
    unsigned int domain = 0, bus = 0, device = 0, function = 0;
    char tail = 0;
    int fields = sscanf(text, "%x:%x:%x.%x%c", &domain, &bus, &device, &function, &tail);
    if (fields != 4 || bus > 0xff || device > 31 || function > 7) return 0;
    gpu->domain = domain;
    gpu->bus = bus;
    gpu->device = device;
    gpu->function = function;
    snprintf(gpu->busId, sizeof gpu->busId, "%08X:%02X:%02X.%X", domain, bus, device, function);
    snprintf(gpu->busIdLegacy, sizeof gpu->busIdLegacy, "%04X:%02X:%02X.%X", domain & 0xffff,
             bus, device, function);
    return 1;
}

/// Applies one telemetry key; returns 0 when the key is not a telemetry key or the value is bad.
static int applyTelemetry(struct nvmlDevice_st *gpu, const char *key, const char *value) {
    unsigned long long number = 0;
    if (!parseUnsigned(value, 10, &number)) return 0;
    if (strcmp(key, "temp") == 0) {
        gpu->temperature = (unsigned int)number;
    } else if (strcmp(key, "power_mw") == 0) {
        gpu->powerMilliwatts = (unsigned int)number;
    } else if (strcmp(key, "util") == 0) {
        gpu->utilGpu = (unsigned int)number;
    } else if (strcmp(key, "mem_util") == 0) {
        gpu->utilMemory = (unsigned int)number;
    } else if (strcmp(key, "memory_used_mib") == 0) {
        gpu->memoryUsed = number * 1024ULL * 1024ULL;
        if (gpu->memoryUsed > gpu->memoryTotal) gpu->memoryUsed = gpu->memoryTotal;
    } else {
        return 0;
    }
    return 1;
}

static void defaultGPU(struct nvmlDevice_st *gpu, unsigned int index) {
    memset(gpu, 0, sizeof *gpu);
    gpu->index = index;
    snprintf(gpu->uuid, sizeof gpu->uuid, "GPU-00000000-0000-4000-8000-%012x", index);
    copyString(gpu->name, sizeof gpu->name, "NVIDIA H100 80GB HBM3");
    char pci[32];
    snprintf(pci, sizeof pci, "0000:%02x:00.0", (index + 1) & 0xff);
    parsePci(gpu, pci);
    gpu->pciDeviceId = 0x233010DE;
    gpu->memoryTotal = 81559ULL * 1024ULL * 1024ULL;
    gpu->temperature = 35;
    gpu->powerMilliwatts = 70000;
    gpu->eccSupported = 1;
    gpu->eccEvents = 1;
}

static int parseGPULine(const char *rest, const char *path, int lineNumber) {
    if (g_gpuCount >= FAKE_MAX_GPUS) {
        fprintf(stderr, "fakenvml: %s:%d: more than %d GPUs\n", path, lineNumber, FAKE_MAX_GPUS);
        return 0;
    }
    struct nvmlDevice_st *gpu = &g_gpus[g_gpuCount];
    defaultGPU(gpu, g_gpuCount);
    char token[FAKE_LINE_MAX];
    while (nextToken(&rest, token, sizeof token)) {
        char *equals = strchr(token, '=');
        if (!equals) {
            fprintf(stderr, "fakenvml: %s:%d: expected key=value, got '%s'\n", path, lineNumber,
                    token);
            return 0;
        }
        *equals = '\0';
        const char *key = token, *value = equals + 1;
        unsigned long long number = 0;
        int ok = 1;
        if (strcmp(key, "index") == 0) {
            ok = parseUnsigned(value, 10, &number) && number == g_gpuCount;
        } else if (strcmp(key, "uuid") == 0) {
            copyString(gpu->uuid, sizeof gpu->uuid, value);
        } else if (strcmp(key, "name") == 0) {
            copyString(gpu->name, sizeof gpu->name, value);
        } else if (strcmp(key, "memory_mib") == 0) {
            ok = parseUnsigned(value, 10, &number);
            gpu->memoryTotal = number * 1024ULL * 1024ULL;
        } else if (strcmp(key, "pci") == 0) {
            ok = parsePci(gpu, value);
        } else if (strcmp(key, "pci_device_id") == 0) {
            ok = parseUnsigned(value, 16, &number);
            gpu->pciDeviceId = (unsigned int)number;
        } else if (strcmp(key, "ecc") == 0) {
            ok = parseUnsigned(value, 10, &number) && number <= 1;
            gpu->eccSupported = (int)number;
        } else if (strcmp(key, "ecc_events") == 0) {
            ok = parseUnsigned(value, 10, &number) && number <= 1;
            gpu->eccEvents = (int)number;
        } else {
            ok = applyTelemetry(gpu, key, value);
        }
        if (!ok) {
            fprintf(stderr, "fakenvml: %s:%d: bad value for '%s': '%s'\n", path, lineNumber, key,
                    value);
            return 0;
        }
    }
    if (gpu->memoryUsed > gpu->memoryTotal) gpu->memoryUsed = gpu->memoryTotal;
    g_gpuCount++;
    return 1;
}

static nvmlReturn_t loadConfig(const char *path) {
    FILE *file = fopen(path, "r");
    if (!file) {
        fprintf(stderr, "fakenvml: cannot open config %s: %s\n", path, strerror(errno));
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    char line[FAKE_LINE_MAX];
    int lineNumber = 0;
    nvmlReturn_t result = NVML_SUCCESS;
    while (fgets(line, sizeof line, file)) {
        lineNumber++;
        line[strcspn(line, "\r\n")] = '\0';
        const char *cursor = line;
        char word[64];
        if (!nextToken(&cursor, word, sizeof word) || word[0] == '#') continue;
        if (strcmp(word, "gpu") == 0) {
            if (!parseGPULine(cursor, path, lineNumber)) {
                result = NVML_ERROR_UNKNOWN;
                break;
            }
        } else if (strcmp(word, "driver") == 0) {
            char version[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
            if (nextToken(&cursor, version, sizeof version)) {
                copyString(g_driverVersion, sizeof g_driverVersion, version);
            }
        } else {
            fprintf(stderr, "fakenvml: %s:%d: unknown directive '%s'\n", path, lineNumber, word);
            result = NVML_ERROR_UNKNOWN;
            break;
        }
    }
    fclose(file);
    return result;
}

// ---------------------------------------------------------------------------------------------
// Events (all with g_lock held)

static void enqueue(struct nvmlEventSet_st *set, nvmlDevice_t device, unsigned long long type,
                    unsigned long long data) {
    if (set->count == FAKE_QUEUE_CAPACITY) {
        // Full: drop the oldest, as a driver's ring would.
        set->head = (set->head + 1) % FAKE_QUEUE_CAPACITY;
        set->count--;
    }
    nvmlEventData_t *slot = &set->queue[(set->head + set->count) % FAKE_QUEUE_CAPACITY];
    slot->device = device;
    slot->eventType = type;
    slot->eventData = data;
    slot->gpuInstanceId = CNVML_INSTANCE_ID_NONE;
    slot->computeInstanceId = CNVML_INSTANCE_ID_NONE;
    set->count++;
}

static void deliver(int index, unsigned long long type, unsigned long long data) {
    for (struct nvmlEventSet_st *set = g_sets; set; set = set->next) {
        if (index >= 0) {
            if (set->masks[index] & type) enqueue(set, &g_gpus[index], type, data);
        } else {
            for (unsigned int i = 0; i < g_gpuCount; i++) {
                if (set->masks[i] & type) {
                    enqueue(set, NULL, type, data);
                    break;
                }
            }
        }
    }
}

/// Parses "<index>" or "*"/"" (every GPU, returned as -1); -2 when invalid.
static int parseIndex(const char *text, int allowAll) {
    if (allowAll && (text[0] == '\0' || strcmp(text, "*") == 0)) return -1;
    unsigned long long number = 0;
    if (!parseUnsigned(text, 10, &number) || number >= g_gpuCount) return -2;
    return (int)number;
}

static void applyEventLine(const char *line) {
    const char *cursor = line;
    char word[64], first[256] = "", second[256] = "";
    if (!nextToken(&cursor, word, sizeof word) || word[0] == '#') return;
    nextToken(&cursor, first, sizeof first);
    if (strcmp(word, "xid") == 0) {
        int index = parseIndex(first, 1);
        unsigned long long code = 0;
        if (index == -2 || !nextToken(&cursor, second, sizeof second) ||
            !parseUnsigned(second, 10, &code)) {
            fprintf(stderr, "fakenvml: bad event line '%s'\n", line);
            return;
        }
        deliver(index, (unsigned long long)nvmlEventTypeXidCriticalError, code);
    } else if (strcmp(word, "ecc") == 0) {
        int index = parseIndex(first, 0);
        nextToken(&cursor, second, sizeof second);
        int isDouble = strcmp(second, "double") == 0;
        if (index < 0 || (!isDouble && strcmp(second, "single") != 0)) {
            fprintf(stderr, "fakenvml: bad event line '%s'\n", line);
            return;
        }
        struct nvmlDevice_st *gpu = &g_gpus[index];
        if (!gpu->eccSupported) return;
        if (isDouble) {
            gpu->eccUncorrected++;
            deliver(index, (unsigned long long)nvmlEventTypeDoubleBitEccError, 0);
        } else {
            gpu->eccCorrected++;
            deliver(index, (unsigned long long)nvmlEventTypeSingleBitEccError, 0);
        }
    } else if (strcmp(word, "lost") == 0 || strcmp(word, "found") == 0) {
        int lost = word[0] == 'l';
        int index = parseIndex(first, 1);
        if (index == -2) {
            fprintf(stderr, "fakenvml: bad event line '%s'\n", line);
            return;
        }
        for (unsigned int i = 0; i < g_gpuCount; i++) {
            if (index < 0 || (int)i == index) g_gpus[i].lost = lost;
        }
    } else if (strcmp(word, "set") == 0) {
        int index = parseIndex(first, 0);
        if (index < 0) {
            fprintf(stderr, "fakenvml: bad event line '%s'\n", line);
            return;
        }
        char token[FAKE_LINE_MAX];
        while (nextToken(&cursor, token, sizeof token)) {
            char *equals = strchr(token, '=');
            if (!equals) continue;
            *equals = '\0';
            if (!applyTelemetry(&g_gpus[index], token, equals + 1)) {
                fprintf(stderr, "fakenvml: bad telemetry '%s' in '%s'\n", token, line);
            }
        }
    } else {
        fprintf(stderr, "fakenvml: unknown event '%s'\n", word);
    }
}

/// Reads the complete lines appended to the events file since the last call.
static void ingestEvents(void) {
    if (!g_activeEventsPath[0]) return;
    struct stat info;
    if (stat(g_activeEventsPath, &info) != 0 || (long long)info.st_size <= g_eventsOffset) return;
    FILE *file = fopen(g_activeEventsPath, "r");
    if (!file) return;
    if (fseeko(file, (off_t)g_eventsOffset, SEEK_SET) != 0) {
        fclose(file);
        return;
    }
    char line[FAKE_LINE_MAX];
    while (fgets(line, sizeof line, file)) {
        size_t length = strlen(line);
        if (length == 0 || line[length - 1] != '\n') break; /* an incomplete line: next time */
        g_eventsOffset += (long long)length;
        line[length - 1] = '\0';
        applyEventLine(line);
    }
    fclose(file);
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the entry points (g_lock held)

static nvmlReturn_t checkDevice(nvmlDevice_t device) {
    if (g_initCount == 0) return NVML_ERROR_UNINITIALIZED;
    if (device < g_gpus || device >= g_gpus + g_gpuCount) return NVML_ERROR_INVALID_ARGUMENT;
    ingestEvents();
    if (device->lost) return NVML_ERROR_GPU_IS_LOST;
    return NVML_SUCCESS;
}

static int isLiveSet(nvmlEventSet_t set) {
    for (struct nvmlEventSet_st *s = g_sets; s; s = s->next) {
        if (s == set) return 1;
    }
    return 0;
}

static nvmlReturn_t copyOut(char *buffer, unsigned int length, const char *value) {
    if (!buffer) return NVML_ERROR_INVALID_ARGUMENT;
    size_t needed = strlen(value) + 1;
    if (length < needed) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buffer, value, needed);
    return NVML_SUCCESS;
}

#define LOCKED(expr)                              \
    do {                                          \
        pthread_mutex_lock(&g_lock);              \
        nvmlReturn_t lockedResult_ = (expr);      \
        pthread_mutex_unlock(&g_lock);            \
        return lockedResult_;                     \
    } while (0)

// ---------------------------------------------------------------------------------------------
// Initialisation

static nvmlReturn_t initLocked(void) {
    if (g_initCount > 0) {
        g_initCount++;
        return NVML_SUCCESS;
    }
    const char *config = g_configured ? g_configPath : getenv("GPUPLANE_FAKE_NVML_CONFIG");
    const char *events = g_configured ? g_eventsPath : getenv("GPUPLANE_FAKE_NVML_EVENTS");
    g_gpuCount = 0;
    copyString(g_driverVersion, sizeof g_driverVersion, "999.99.99-fake");
    if (config && config[0]) {
        nvmlReturn_t result = loadConfig(config);
        if (result != NVML_SUCCESS) {
            g_gpuCount = 0;
            return result;
        }
    }
    copyString(g_activeEventsPath, sizeof g_activeEventsPath, events ? events : "");
    g_eventsOffset = 0;
    g_initCount = 1;
    ingestEvents();
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t fakeNVMLConfigure(const char *configPath, const char *eventsPath) {
    if ((configPath && strlen(configPath) >= FAKE_PATH_MAX) ||
        (eventsPath && strlen(eventsPath) >= FAKE_PATH_MAX)) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&g_lock);
    copyString(g_configPath, sizeof g_configPath, configPath ? configPath : "");
    copyString(g_eventsPath, sizeof g_eventsPath, eventsPath ? eventsPath : "");
    g_configured = 1;
    pthread_mutex_unlock(&g_lock);
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlInit_v2(void) { LOCKED(initLocked()); }

FAKE_EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    LOCKED(initLocked());
}

static nvmlReturn_t shutdownLocked(void) {
    if (g_initCount == 0) return NVML_ERROR_UNINITIALIZED;
    g_initCount--;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlShutdown(void) { LOCKED(shutdownLocked()); }

FAKE_EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t driverVersionLocked(char *version, unsigned int length) {
    if (g_initCount == 0) return NVML_ERROR_UNINITIALIZED;
    return copyOut(version, length, g_driverVersion);
}

FAKE_EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    LOCKED(driverVersionLocked(version, length));
}

// ---------------------------------------------------------------------------------------------
// Devices

static nvmlReturn_t countLocked(unsigned int *count) {
    if (g_initCount == 0) return NVML_ERROR_UNINITIALIZED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    ingestEvents();
    *count = g_gpuCount;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    LOCKED(countLocked(deviceCount));
}

static nvmlReturn_t handleLocked(unsigned int index, nvmlDevice_t *device) {
    if (g_initCount == 0) return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= g_gpuCount) return NVML_ERROR_INVALID_ARGUMENT;
    ingestEvents();
    if (g_gpus[index].lost) return NVML_ERROR_GPU_IS_LOST;
    *device = &g_gpus[index];
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    LOCKED(handleLocked(index, device));
}

static nvmlReturn_t indexLocked(nvmlDevice_t device, unsigned int *index) {
    nvmlReturn_t result = checkDevice(device);
    if (result != NVML_SUCCESS) return result;
    if (!index) return NVML_ERROR_INVALID_ARGUMENT;
    *index = device->index;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    LOCKED(indexLocked(device, index));
}

static nvmlReturn_t stringLocked(nvmlDevice_t device, char *buffer, unsigned int length,
                                 int wantName) {
    nvmlReturn_t result = checkDevice(device);
    if (result != NVML_SUCCESS) return result;
    return copyOut(buffer, length, wantName ? device->name : device->uuid);
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    LOCKED(stringLocked(device, uuid, length, 0));
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    LOCKED(stringLocked(device, name, length, 1));
}

static nvmlReturn_t pciLocked(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    nvmlReturn_t result = checkDevice(device);
    if (result != NVML_SUCCESS) return result;
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    copyString(pci->busIdLegacy, sizeof pci->busIdLegacy, device->busIdLegacy);
    copyString(pci->busId, sizeof pci->busId, device->busId);
    pci->domain = device->domain;
    pci->bus = device->bus;
    pci->device = device->device;
    pci->pciDeviceId = device->pciDeviceId;
    pci->pciSubSystemId = 0x16C110DE;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    LOCKED(pciLocked(device, pci));
}

static nvmlReturn_t memoryLocked(nvmlDevice_t device, nvmlMemory_t *memory) {
    nvmlReturn_t result = checkDevice(device);
    if (result != NVML_SUCCESS) return result;
    if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = device->memoryTotal;
    memory->used = device->memoryUsed;
    memory->free = device->memoryTotal - device->memoryUsed;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    LOCKED(memoryLocked(device, memory));
}

static nvmlReturn_t temperatureLocked(nvmlDevice_t device, nvmlTemperatureSensors_t sensor,
                                      unsigned int *temp) {
    nvmlReturn_t result = checkDevice(device);
    if (result != NVML_SUCCESS) return result;
    if (!temp || sensor != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = device->temperature;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device,
                                                  nvmlTemperatureSensors_t sensorType,
                                                  unsigned int *temp) {
    LOCKED(temperatureLocked(device, sensorType, temp));
}

static nvmlReturn_t powerLocked(nvmlDevice_t device, unsigned int *power) {
    nvmlReturn_t result = checkDevice(device);
    if (result != NVML_SUCCESS) return result;
    if (!power) return NVML_ERROR_INVALID_ARGUMENT;
    *power = device->powerMilliwatts;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    LOCKED(powerLocked(device, power));
}

static nvmlReturn_t utilizationLocked(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    nvmlReturn_t result = checkDevice(device);
    if (result != NVML_SUCCESS) return result;
    if (!utilization) return NVML_ERROR_INVALID_ARGUMENT;
    utilization->gpu = device->utilGpu;
    utilization->memory = device->utilMemory;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device,
                                                       nvmlUtilization_t *utilization) {
    LOCKED(utilizationLocked(device, utilization));
}

static nvmlReturn_t eccLocked(nvmlDevice_t device, nvmlMemoryErrorType_t errorType,
                              nvmlEccCounterType_t counterType, unsigned long long *counts) {
    nvmlReturn_t result = checkDevice(device);
    if (result != NVML_SUCCESS) return result;
    if (!counts || (errorType != NVML_MEMORY_ERROR_TYPE_CORRECTED &&
                    errorType != NVML_MEMORY_ERROR_TYPE_UNCORRECTED) ||
        (counterType != NVML_VOLATILE_ECC && counterType != NVML_AGGREGATE_ECC)) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (!device->eccSupported) return NVML_ERROR_NOT_SUPPORTED;
    *counts = errorType == NVML_MEMORY_ERROR_TYPE_CORRECTED ? device->eccCorrected
                                                            : device->eccUncorrected;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device,
                                                     nvmlMemoryErrorType_t errorType,
                                                     nvmlEccCounterType_t counterType,
                                                     unsigned long long *eccCounts) {
    LOCKED(eccLocked(device, errorType, counterType, eccCounts));
}

// ---------------------------------------------------------------------------------------------
// Event sets

static unsigned long long supportedTypes(nvmlDevice_t device) {
    unsigned long long types = (unsigned long long)nvmlEventTypeXidCriticalError;
    if (device->eccSupported && device->eccEvents) {
        types |= (unsigned long long)(nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError);
    }
    return types;
}

static nvmlReturn_t supportedLocked(nvmlDevice_t device, unsigned long long *eventTypes) {
    nvmlReturn_t result = checkDevice(device);
    if (result != NVML_SUCCESS) return result;
    if (!eventTypes) return NVML_ERROR_INVALID_ARGUMENT;
    *eventTypes = supportedTypes(device);
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                          unsigned long long *eventTypes) {
    LOCKED(supportedLocked(device, eventTypes));
}

static nvmlReturn_t createSetLocked(nvmlEventSet_t *set) {
    if (g_initCount == 0) return NVML_ERROR_UNINITIALIZED;
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    struct nvmlEventSet_st *created = calloc(1, sizeof *created);
    if (!created) return NVML_ERROR_MEMORY;
    created->next = g_sets;
    g_sets = created;
    *set = created;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) { LOCKED(createSetLocked(set)); }

static nvmlReturn_t registerLocked(nvmlDevice_t device, unsigned long long types,
                                   nvmlEventSet_t set) {
    nvmlReturn_t result = checkDevice(device);
    if (result != NVML_SUCCESS) return result;
    if (!isLiveSet(set)) return NVML_ERROR_INVALID_ARGUMENT;
    if (types & ~supportedTypes(device)) return NVML_ERROR_NOT_SUPPORTED;
    set->masks[device->index] |= types;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device,
                                                  unsigned long long eventTypes,
                                                  nvmlEventSet_t set) {
    LOCKED(registerLocked(device, eventTypes, set));
}

static long long monotonicNanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/// One poll of a wait: an event, a lost GPU, or NVML_ERROR_TIMEOUT meaning "nothing yet".
static nvmlReturn_t pollSetLocked(nvmlEventSet_t set, nvmlEventData_t *data) {
    if (g_initCount == 0) return NVML_ERROR_UNINITIALIZED;
    if (!isLiveSet(set)) return NVML_ERROR_INVALID_ARGUMENT;
    ingestEvents();
    if (set->count > 0) {
        *data = set->queue[set->head];
        set->head = (set->head + 1) % FAKE_QUEUE_CAPACITY;
        set->count--;
        return NVML_SUCCESS;
    }
    for (unsigned int i = 0; i < g_gpuCount; i++) {
        if (set->masks[i] && g_gpus[i].lost) return NVML_ERROR_GPU_IS_LOST;
    }
    return NVML_ERROR_TIMEOUT;
}

FAKE_EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                             unsigned int timeoutms) {
    if (!data) return NVML_ERROR_INVALID_ARGUMENT;
    long long deadline = monotonicNanoseconds() + (long long)timeoutms * 1000000LL;
    for (;;) {
        pthread_mutex_lock(&g_lock);
        nvmlReturn_t result = pollSetLocked(set, data);
        pthread_mutex_unlock(&g_lock);
        if (result != NVML_ERROR_TIMEOUT) return result;
        long long remaining = deadline - monotonicNanoseconds();
        if (remaining <= 0) return NVML_ERROR_TIMEOUT;
        long long step = remaining < FAKE_POLL_NS ? remaining : FAKE_POLL_NS;
        struct timespec pause = {.tv_sec = 0, .tv_nsec = (long)step};
        nanosleep(&pause, NULL);
    }
}

static nvmlReturn_t freeSetLocked(nvmlEventSet_t set) {
    if (g_initCount == 0) return NVML_ERROR_UNINITIALIZED;
    for (struct nvmlEventSet_st **link = &g_sets; *link; link = &(*link)->next) {
        if (*link == set) {
            *link = set->next;
            free(set);
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_INVALID_ARGUMENT;
}

FAKE_EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) { LOCKED(freeSetLocked(set)); }

// ---------------------------------------------------------------------------------------------
// Every export has exactly the type the binding casts its dlsym result to.

static const CNVMLInitFn checkInit __attribute__((unused)) = nvmlInit_v2;
static const CNVMLInitWithFlagsFn checkInitWithFlags __attribute__((unused)) = nvmlInitWithFlags;
static const CNVMLShutdownFn checkShutdown __attribute__((unused)) = nvmlShutdown;
static const CNVMLErrorStringFn checkErrorString __attribute__((unused)) = nvmlErrorString;
static const CNVMLSystemGetDriverVersionFn checkDriver __attribute__((unused)) =
    nvmlSystemGetDriverVersion;
static const CNVMLDeviceGetCountFn checkCount __attribute__((unused)) = nvmlDeviceGetCount_v2;
static const CNVMLDeviceGetHandleByIndexFn checkHandle __attribute__((unused)) =
    nvmlDeviceGetHandleByIndex_v2;
static const CNVMLDeviceGetIndexFn checkIndex __attribute__((unused)) = nvmlDeviceGetIndex;
static const CNVMLDeviceGetStringFn checkUUID __attribute__((unused)) = nvmlDeviceGetUUID;
static const CNVMLDeviceGetStringFn checkName __attribute__((unused)) = nvmlDeviceGetName;
static const CNVMLDeviceGetPciInfoFn checkPci __attribute__((unused)) = nvmlDeviceGetPciInfo_v3;
static const CNVMLDeviceGetMemoryInfoFn checkMemory __attribute__((unused)) =
    nvmlDeviceGetMemoryInfo;
static const CNVMLDeviceGetTemperatureFn checkTemperature __attribute__((unused)) =
    nvmlDeviceGetTemperature;
static const CNVMLDeviceGetPowerUsageFn checkPower __attribute__((unused)) =
    nvmlDeviceGetPowerUsage;
static const CNVMLDeviceGetUtilizationRatesFn checkUtilization __attribute__((unused)) =
    nvmlDeviceGetUtilizationRates;
static const CNVMLDeviceGetTotalEccErrorsFn checkEcc __attribute__((unused)) =
    nvmlDeviceGetTotalEccErrors;
static const CNVMLEventSetCreateFn checkSetCreate __attribute__((unused)) = nvmlEventSetCreate;
static const CNVMLDeviceRegisterEventsFn checkRegister __attribute__((unused)) =
    nvmlDeviceRegisterEvents;
static const CNVMLDeviceGetSupportedEventTypesFn checkSupported __attribute__((unused)) =
    nvmlDeviceGetSupportedEventTypes;
static const CNVMLEventSetWaitFn checkWait __attribute__((unused)) = nvmlEventSetWait_v2;
static const CNVMLEventSetFreeFn checkSetFree __attribute__((unused)) = nvmlEventSetFree;
static const CNVMLFakeConfigureFn checkConfigure __attribute__((unused)) = fakeNVMLConfigure;
