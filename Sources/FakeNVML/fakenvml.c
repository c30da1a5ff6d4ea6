#include "FakeNVML.h"
