/*
 * CNVML: the subset of NVML's published C API that gpuplane uses, written from NVIDIA's
 * NVML API reference (https://docs.nvidia.com/deploy/nvml-api/). No NVIDIA header is needed
 * to build.
 *
 * Layouts and values here must match libnvidia-ml.so.1 exactly: the node-agent dlopens the
 * real library and calls it through the function-pointer types at the end of this file. The
 * fake library (Sources/FakeNVML) implements the same symbols against the same types.
 *
 * Nothing here declares a function: callers resolve every symbol with dlsym, so no binary
 * links against libnvidia-ml and hosts without it still start.
 */
#ifndef GPUPLANE_CNVML_H
#define GPUPLANE_CNVML_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* Buffer sizes                                                                             */
/* ---------------------------------------------------------------------------------------- */

/** Large enough for nvmlDeviceGetUUID. */
#define NVML_DEVICE_UUID_BUFFER_SIZE 80
/** Large enough for nvmlDeviceGetUUID on drivers with longer (MIG) identifiers. */
#define NVML_DEVICE_UUID_V2_BUFFER_SIZE 96
/** Large enough for nvmlDeviceGetName (older drivers). */
#define NVML_DEVICE_NAME_BUFFER_SIZE 64
/** Large enough for nvmlDeviceGetName. */
#define NVML_DEVICE_NAME_V2_BUFFER_SIZE 96
/** Large enough for nvmlSystemGetDriverVersion. */
#define NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE 80
/** Size of nvmlPciInfo_t.busId. */
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE 32
/** Size of nvmlPciInfo_t.busIdLegacy. */
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE 16

/* ---------------------------------------------------------------------------------------- */
/* Return codes                                                                             */
/* ---------------------------------------------------------------------------------------- */

/** What every NVML call returns. */
typedef enum nvmlReturn_enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22,
    NVML_ERROR_INSUFFICIENT_RESOURCES = 23,
    NVML_ERROR_FREQ_NOT_SUPPORTED = 24,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_DEPRECATED = 26,
    NVML_ERROR_NOT_READY = 27,
    NVML_ERROR_GPU_NOT_FOUND = 28,
    NVML_ERROR_INVALID_STATE = 29,
    NVML_ERROR_UNKNOWN = 999
} nvmlReturn_t;

/* ---------------------------------------------------------------------------------------- */
/* Handles and structures                                                                   */
/* ---------------------------------------------------------------------------------------- */

/** An opaque handle to one GPU. */
typedef struct nvmlDevice_st *nvmlDevice_t;

/** An opaque handle to a set of event registrations. */
typedef struct nvmlEventSet_st *nvmlEventSet_t;

/** Memory of a device, in bytes (nvmlDeviceGetMemoryInfo, version 1). */
typedef struct nvmlMemory_st {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

/** PCI location of a device, as nvmlDeviceGetPciInfo_v3 fills it. */
typedef struct nvmlPciInfo_st {
    /** The legacy domain:bus:device.function identifier (4-digit domain), NUL-terminated. */
    char busIdLegacy[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE];
    /** PCI domain, 0 to 0xffffffff. */
    unsigned int domain;
    /** Bus, 0 to 0xff. */
    unsigned int bus;
    /** Device on the bus, 0 to 31. */
    unsigned int device;
    /** Combined 16-bit device id and 16-bit vendor id. */
    unsigned int pciDeviceId;
    /** 32-bit sub-system device id. */
    unsigned int pciSubSystemId;
    /** The domain:bus:device.function identifier (8-digit domain), NUL-terminated. */
    char busId[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
} nvmlPciInfo_t;

/** Utilisation over the last sample period, in percent. */
typedef struct nvmlUtilization_st {
    /** Percent of time a kernel was executing. */
    unsigned int gpu;
    /** Percent of time device memory was read or written. */
    unsigned int memory;
} nvmlUtilization_t;

/** Temperature sensors. */
typedef enum nvmlTemperatureSensors_enum {
    /** The GPU die. */
    NVML_TEMPERATURE_GPU = 0,
    NVML_TEMPERATURE_COUNT
} nvmlTemperatureSensors_t;

/** Memory error types: corrected (single-bit ECC) and uncorrected (double-bit ECC). */
typedef enum nvmlMemoryErrorType_enum {
    NVML_MEMORY_ERROR_TYPE_CORRECTED = 0,
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1,
    NVML_MEMORY_ERROR_TYPE_COUNT
} nvmlMemoryErrorType_t;

/** ECC counter kinds: since the driver loaded, or over the device's lifetime. */
typedef enum nvmlEccCounterType_enum {
    NVML_VOLATILE_ECC = 0,
    NVML_AGGREGATE_ECC = 1,
    NVML_ECC_COUNTER_TYPE_COUNT
} nvmlEccCounterType_t;

/* ---------------------------------------------------------------------------------------- */
/* Events                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/** Single-bit (corrected) ECC errors. */
#define nvmlEventTypeSingleBitEccError 0x0000000000000001LL
/** Double-bit (uncorrected) ECC errors. */
#define nvmlEventTypeDoubleBitEccError 0x0000000000000002LL
/** Performance-state changes. */
#define nvmlEventTypePState 0x0000000000000004LL
/** A critical XID error; eventData holds the XID (999 when unknown). */
#define nvmlEventTypeXidCriticalError 0x0000000000000008LL
/** Clock changes. */
#define nvmlEventTypeClock 0x0000000000000010LL
/** AC/battery power-source changes. */
#define nvmlEventTypePowerSourceChange 0x0000000000000080LL
/** MIG configuration changes. */
#define nvmlEventMigConfigChange 0x0000000000000100LL
/** No events. */
#define nvmlEventTypeNone 0x0000000000000000LL

/** Value of gpuInstanceId / computeInstanceId when an event is not attributable to one. */
#define CNVML_INSTANCE_ID_NONE 0xFFFFFFFFu

/** One event, as nvmlEventSetWait_v2 fills it. */
typedef struct nvmlEventData_st {
    /** The device the event occurred on. */
    nvmlDevice_t device;
    /** Which event (one of the nvmlEventType bits). */
    unsigned long long eventType;
    /** For nvmlEventTypeXidCriticalError the XID (999 when unknown); 0 otherwise. */
    unsigned long long eventData;
    /** With MIG, the GPU instance the event belongs to; 0xFFFFFFFF otherwise. */
    unsigned int gpuInstanceId;
    /** With MIG, the compute instance the event belongs to; 0xFFFFFFFF otherwise. */
    unsigned int computeInstanceId;
} nvmlEventData_t;

/* ---------------------------------------------------------------------------------------- */
/* Function-pointer types of the symbols gpuplane resolves with dlsym                       */
/* ---------------------------------------------------------------------------------------- */

/** nvmlInit_v2 and nvmlInit. */
typedef nvmlReturn_t (*CNVMLInitFn)(void);
/** nvmlInitWithFlags. */
typedef nvmlReturn_t (*CNVMLInitWithFlagsFn)(unsigned int flags);
/** nvmlShutdown. */
typedef nvmlReturn_t (*CNVMLShutdownFn)(void);
/** nvmlErrorString. */
typedef const char *(*CNVMLErrorStringFn)(nvmlReturn_t result);
/** nvmlSystemGetDriverVersion. */
typedef nvmlReturn_t (*CNVMLSystemGetDriverVersionFn)(char *version, unsigned int length);
/** nvmlDeviceGetCount_v2 and nvmlDeviceGetCount. */
typedef nvmlReturn_t (*CNVMLDeviceGetCountFn)(unsigned int *deviceCount);
/** nvmlDeviceGetHandleByIndex_v2 and nvmlDeviceGetHandleByIndex. */
typedef nvmlReturn_t (*CNVMLDeviceGetHandleByIndexFn)(unsigned int index, nvmlDevice_t *device);
/** nvmlDeviceGetIndex. */
typedef nvmlReturn_t (*CNVMLDeviceGetIndexFn)(nvmlDevice_t device, unsigned int *index);
/** nvmlDeviceGetUUID and nvmlDeviceGetName. */
typedef nvmlReturn_t (*CNVMLDeviceGetStringFn)(nvmlDevice_t device, char *buffer, unsigned int length);
/** nvmlDeviceGetPciInfo_v3 (and the older _v2 and unversioned symbols, whose structures are a
 *  prefix-compatible 16-byte bus id followed by smaller fields). */
typedef nvmlReturn_t (*CNVMLDeviceGetPciInfoFn)(nvmlDevice_t device, nvmlPciInfo_t *pci);
/** nvmlDeviceGetMemoryInfo. */
typedef nvmlReturn_t (*CNVMLDeviceGetMemoryInfoFn)(nvmlDevice_t device, nvmlMemory_t *memory);
/** nvmlDeviceGetTemperature. */
typedef nvmlReturn_t (*CNVMLDeviceGetTemperatureFn)(
    nvmlDevice_t device, nvmlTemperatureSensors_t sensorType, unsigned int *temp);
/** nvmlDeviceGetPowerUsage (milliwatts). */
typedef nvmlReturn_t (*CNVMLDeviceGetPowerUsageFn)(nvmlDevice_t device, unsigned int *power);
/** nvmlDeviceGetUtilizationRates. */
typedef nvmlReturn_t (*CNVMLDeviceGetUtilizationRatesFn)(
    nvmlDevice_t device, nvmlUtilization_t *utilization);
/** nvmlDeviceGetTotalEccErrors. */
typedef nvmlReturn_t (*CNVMLDeviceGetTotalEccErrorsFn)(
    nvmlDevice_t device, nvmlMemoryErrorType_t errorType, nvmlEccCounterType_t counterType,
    unsigned long long *eccCounts);
/** nvmlEventSetCreate. */
typedef nvmlReturn_t (*CNVMLEventSetCreateFn)(nvmlEventSet_t *set);
/** nvmlDeviceRegisterEvents. */
typedef nvmlReturn_t (*CNVMLDeviceRegisterEventsFn)(
    nvmlDevice_t device, unsigned long long eventTypes, nvmlEventSet_t set);
/** nvmlDeviceGetSupportedEventTypes. */
typedef nvmlReturn_t (*CNVMLDeviceGetSupportedEventTypesFn)(
    nvmlDevice_t device, unsigned long long *eventTypes);
/** nvmlEventSetWait_v2 and nvmlEventSetWait. */
typedef nvmlReturn_t (*CNVMLEventSetWaitFn)(
    nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms);
/** nvmlEventSetFree. */
typedef nvmlReturn_t (*CNVMLEventSetFreeFn)(nvmlEventSet_t set);

/** fakeNVMLConfigure: exported by the fake library only (never by NVIDIA's). */
typedef nvmlReturn_t (*CNVMLFakeConfigureFn)(const char *configPath, const char *eventsPath);

#ifdef __cplusplus
}
#endif

#endif /* GPUPLANE_CNVML_H */
