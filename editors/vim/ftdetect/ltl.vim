" Vim filetype detection for LTL (.ltl files).
autocmd BufNewFile,BufRead *.ltl setlocal filetype=ltl
