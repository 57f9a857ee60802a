// placeholder: replaced by the real suite
#include <gtest/gtest.h>
extern "C" {
#include "lowvram/sparse.h"
}
TEST(SparsePlaceholder, MaskRowBytes) { EXPECT_EQ(lv_mask_row_bytes(9), 2); }
