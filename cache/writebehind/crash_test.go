package writebehind_test

func crashChild() {}

const crashChildEnv = "STRATA_WRITEBEHIND_CRASH_CHILD"
