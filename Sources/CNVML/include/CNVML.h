#ifndef GPUPLANE_CNVML_H
#define GPUPLANE_CNVML_H
#endif
