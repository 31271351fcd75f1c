" Vim indent file
" Language: LTL, files *.ltl
"
" Indentation by bracket depth: a line is indented one 'shiftwidth' (4 with
" the ftplugin) deeper for each earlier line that left a `{`, `(` or `[`
" open; a line that starts with `}`, `)` or `]` lines up with the line of the
" bracket it closes. Several brackets opened on one line count once, so
"     train, val = split(idx(root + "/a",
"         root + "/b"), [55_000, 5_000])
" Brackets inside strings and comments do not count. Strings are one line
" long in LTL, so each line is scanned on its own.

if exists("b:did_indent")
  finish
endif
let b:did_indent = 1

setlocal indentexpr=GetLtlIndent(v:lnum)
setlocal indentkeys=0},0),0],!^F,o,O
setlocal autoindent nosmartindent nocindent nolisp

let b:undo_indent = "setlocal indentexpr< indentkeys< autoindent< smartindent< cindent< lisp<"

if exists("*GetLtlIndent")
  finish
endif

let s:cpo_save = &cpo
set cpo&vim

" The brackets of line lnum outside strings and comments, as a list of
" [byte index, char].
function! s:Brackets(lnum) abort
  let text = getline(a:lnum)
  let out = []
  let n = strlen(text)
  let in_str = 0
  let i = 0
  while i < n
    let c = text[i]
    if in_str
      if c ==# '\'
        let i += 1
      elseif c ==# '"'
        let in_str = 0
      endif
    elseif c ==# '"'
      let in_str = 1
    elseif c ==# '#'
      break
    elseif stridx('([{)]}', c) >= 0
      call add(out, [i, c])
    endif
    let i += 1
  endwhile
  return out
endfunction

" Split a line's brackets into [closers left unmatched, openers left open]
" (byte indexes). Every opener left open comes after every unmatched closer.
function! s:Balance(brackets) abort
  let closers = []
  let stack = []
  for [i, c] in a:brackets
    if stridx('([{', c) >= 0
      call add(stack, i)
    elseif !empty(stack)
      call remove(stack, -1)
    else
      call add(closers, i)
    endif
  endfor
  return [closers, stack]
endfunction

" The [line, index] of the bracket that the closer at (lnum, idx) closes,
" or [0, 0] when none does.
function! s:Opener(lnum, idx) abort
  let depth = 0
  let l = a:lnum
  while l > 0
    let brackets = s:Brackets(l)
    if l == a:lnum
      call filter(brackets, 'v:val[0] < a:idx')
    endif
    for [i, c] in reverse(brackets)
      if stridx(')]}', c) >= 0
        let depth += 1
      elseif depth == 0
        return [l, i]
      else
        let depth -= 1
      endif
    endfor
    let l -= 1
  endwhile
  return [0, 0]
endfunction

" The indent that the bracket depth at (lnum, idx) calls for: that of line
" lnum, or, where a bracket before idx on the line closes an earlier line's
" bracket, that of what follows the last such closer; then one level more
" if a bracket before idx on the line is still open.
function! s:IndentAt(lnum, idx) abort
  let before = filter(s:Brackets(a:lnum), 'v:val[0] < a:idx')
  let [closers, open] = s:Balance(before)
  let base = empty(closers) ? indent(a:lnum) : s:AfterCloser(a:lnum, closers[-1])
  return base + (empty(open) ? 0 : shiftwidth())
endfunction

" The indent of what follows the closer at (lnum, idx): the indent at its
" opener.
function! s:AfterCloser(lnum, idx) abort
  let [l, i] = s:Opener(a:lnum, a:idx)
  return l == 0 ? 0 : s:IndentAt(l, i)
endfunction

function! GetLtlIndent(lnum) abort
  " A line that starts with closers lines up with the opener of the last one.
  let lead = matchend(getline(a:lnum), '^\s*[])}]\%(\s*[])}]\)*')
  if lead > 0
    return s:AfterCloser(a:lnum, lead - 1)
  endif
  " Otherwise: the indent at the end of the previous non-blank line.
  let p = prevnonblank(a:lnum - 1)
  return p == 0 ? 0 : s:IndentAt(p, strlen(getline(p)))
endfunction

let &cpo = s:cpo_save
unlet s:cpo_save
