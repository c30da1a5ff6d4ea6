#include "CNVML.h"
