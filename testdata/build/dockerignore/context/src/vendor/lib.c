src/vendor/lib.c
