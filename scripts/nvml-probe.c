// nvml-probe: checks a host's libnvidia-ml.so.1 against gpuplane's CNVML.h, making the calls
// the node-agent makes, through the same dlsym'd function-pointer types.
//
//   cc -I Sources/CNVML/include scripts/nvml-probe.c -ldl -o nvml-probe && ./nvml-probe [library]
//
// Prints the inventory, the supported event types, and waits once for an event (a timeout is
// the expected answer on a healthy host). Exits non-zero when a required call fails.
//
// Checked on an NVIDIA H100 80GB HBM3, driver 580.159.04: every symbol resolved under its
// preferred name; sizeof nvmlPciInfo_t 68 with busId "00000000:00:06.0" and busIdLegacy
// "0000:00:06.0" as nvidia-smi shows them; 81559 MiB total; supported events 0xff9f, of which
// XID + both ECC (0xb) registered; a 1 s wait answered NVML_ERROR_TIMEOUT (10).
#include "CNVML.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESOLVE(type, var, ...)                                                      \
    type var = NULL;                                                                 \
    do {                                                                             \
        const char *names_[] = {__VA_ARGS__, NULL};                                  \
        for (int i_ = 0; names_[i_] && !var; i_++) {                                 \
            var = (type)dlsym(lib, names_[i_]);                                      \
            if (var) printf("symbol %-34s found\n", names_[i_]);                     \
        }                                                                            \
        if (!var) printf("symbol %-34s MISSING\n", names_[0]);                       \
    } while (0)

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "libnvidia-ml.so.1";
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("dlopen %s: %s\n", path, dlerror());
        return 2;
    }
    printf("sizeof nvmlPciInfo_t=%zu nvmlEventData_t=%zu nvmlMemory_t=%zu\n", sizeof(nvmlPciInfo_t),
           sizeof(nvmlEventData_t), sizeof(nvmlMemory_t));
    RESOLVE(CNVMLInitFn, init, "nvmlInit_v2", "nvmlInit");
    RESOLVE(CNVMLShutdownFn, shutdown, "nvmlShutdown");
    RESOLVE(CNVMLErrorStringFn, errorString, "nvmlErrorString");
    RESOLVE(CNVMLSystemGetDriverVersionFn, driverVersion, "nvmlSystemGetDriverVersion");
    RESOLVE(CNVMLDeviceGetCountFn, getCount, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
    RESOLVE(CNVMLDeviceGetHandleByIndexFn, getHandle, "nvmlDeviceGetHandleByIndex_v2",
            "nvmlDeviceGetHandleByIndex");
    RESOLVE(CNVMLDeviceGetIndexFn, getIndex, "nvmlDeviceGetIndex");
    RESOLVE(CNVMLDeviceGetStringFn, getUUID, "nvmlDeviceGetUUID");
    RESOLVE(CNVMLDeviceGetStringFn, getName, "nvmlDeviceGetName");
    RESOLVE(CNVMLDeviceGetPciInfoFn, getPci, "nvmlDeviceGetPciInfo_v3");
    RESOLVE(CNVMLDeviceGetMemoryInfoFn, getMemory, "nvmlDeviceGetMemoryInfo");
    RESOLVE(CNVMLDeviceGetTemperatureFn, getTemperature, "nvmlDeviceGetTemperature");
    RESOLVE(CNVMLDeviceGetPowerUsageFn, getPower, "nvmlDeviceGetPowerUsage");
    RESOLVE(CNVMLDeviceGetUtilizationRatesFn, getUtilization, "nvmlDeviceGetUtilizationRates");
    RESOLVE(CNVMLDeviceGetTotalEccErrorsFn, getEcc, "nvmlDeviceGetTotalEccErrors");
    RESOLVE(CNVMLEventSetCreateFn, setCreate, "nvmlEventSetCreate");
    RESOLVE(CNVMLDeviceRegisterEventsFn, registerEvents, "nvmlDeviceRegisterEvents");
    RESOLVE(CNVMLDeviceGetSupportedEventTypesFn, supported, "nvmlDeviceGetSupportedEventTypes");
    RESOLVE(CNVMLEventSetWaitFn, wait, "nvmlEventSetWait_v2", "nvmlEventSetWait");
    RESOLVE(CNVMLEventSetFreeFn, setFree, "nvmlEventSetFree");
    if (!init || !shutdown || !getCount || !getHandle || !getUUID) return 3;

    nvmlReturn_t r = init();
    if (r != NVML_SUCCESS) {
        printf("nvmlInit: %d %s\n", r, errorString ? errorString(r) : "");
        return 4;
    }
    char text[128] = "";
    if (driverVersion && driverVersion(text, NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE) == NVML_SUCCESS)
        printf("driver %s\n", text);
    printf("errorString(15)=%s errorString(10)=%s\n", errorString ? errorString(NVML_ERROR_GPU_IS_LOST) : "",
           errorString ? errorString(NVML_ERROR_TIMEOUT) : "");
    unsigned int count = 0;
    r = getCount(&count);
    printf("count=%u (r=%d)\n", count, r);
    nvmlEventSet_t set = NULL;
    if (setCreate) printf("nvmlEventSetCreate r=%d\n", setCreate(&set));
    for (unsigned int i = 0; i < count; i++) {
        nvmlDevice_t device = NULL;
        r = getHandle(i, &device);
        if (r != NVML_SUCCESS) {
            printf("gpu %u handle r=%d\n", i, r);
            continue;
        }
        unsigned int index = 99;
        if (getIndex) getIndex(device, &index);
        char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE] = "", name[NVML_DEVICE_NAME_V2_BUFFER_SIZE] = "";
        getUUID(device, uuid, sizeof uuid);
        if (getName) getName(device, name, sizeof name);
        nvmlPciInfo_t pci;
        memset(&pci, 0, sizeof pci);
        nvmlReturn_t pr = getPci ? getPci(device, &pci) : NVML_ERROR_FUNCTION_NOT_FOUND;
        nvmlMemory_t memory = {0};
        nvmlReturn_t mr = getMemory ? getMemory(device, &memory) : NVML_ERROR_FUNCTION_NOT_FOUND;
        unsigned int temp = 0, power = 0;
        nvmlReturn_t tr = getTemperature ? getTemperature(device, NVML_TEMPERATURE_GPU, &temp) : 13;
        nvmlReturn_t wr = getPower ? getPower(device, &power) : 13;
        nvmlUtilization_t util = {0};
        nvmlReturn_t ur = getUtilization ? getUtilization(device, &util) : 13;
        unsigned long long corrected = 0, uncorrected = 0;
        nvmlReturn_t er1 = getEcc ? getEcc(device, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC, &corrected) : 13;
        nvmlReturn_t er2 = getEcc ? getEcc(device, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC, &uncorrected) : 13;
        printf("gpu %u index=%u uuid=%s name=\"%s\"\n", i, index, uuid, name);
        printf("  pci r=%d busId=%s busIdLegacy=%s domain=%u bus=%u device=%u pciDeviceId=%08x sub=%08x\n",
               pr, pci.busId, pci.busIdLegacy, pci.domain, pci.bus, pci.device, pci.pciDeviceId,
               pci.pciSubSystemId);
        printf("  memory r=%d total=%llu MiB used=%llu MiB free=%llu MiB\n", mr, memory.total >> 20,
               memory.used >> 20, memory.free >> 20);
        printf("  temp r=%d %u C; power r=%d %u mW; util r=%d gpu=%u%% mem=%u%%\n", tr, temp, wr, power,
               ur, util.gpu, util.memory);
        printf("  ecc r=%d/%d corrected=%llu uncorrected=%llu\n", er1, er2, corrected, uncorrected);
        unsigned long long types = 0;
        nvmlReturn_t sr = supported ? supported(device, &types) : 13;
        printf("  supported events r=%d mask=0x%llx\n", sr, types);
        if (set && registerEvents) {
            unsigned long long wanted = types & (nvmlEventTypeXidCriticalError | nvmlEventTypeSingleBitEccError |
                                                 nvmlEventTypeDoubleBitEccError);
            printf("  register 0x%llx r=%d\n", wanted, registerEvents(device, wanted, set));
        }
    }
    if (set && wait) {
        nvmlEventData_t data;
        memset(&data, 0xAB, sizeof data);
        r = wait(set, &data, 1000);
        printf("wait 1000ms r=%d (%s)", r, errorString ? errorString(r) : "");
        if (r == NVML_SUCCESS)
            printf(" type=0x%llx data=%llu gi=%u ci=%u", data.eventType, data.eventData, data.gpuInstanceId,
                   data.computeInstanceId);
        printf("\n");
    }
    if (set && setFree) printf("nvmlEventSetFree r=%d\n", setFree(set));
    printf("nvmlShutdown r=%d\n", shutdown());
    return 0;
}
