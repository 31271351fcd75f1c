" Vim syntax file
" Language:    LTL (Lightning-style training language), files *.ltl
" Reference:   docs/language.md (tokens, keywords), docs/editors.md (what is highlighted)
"
" Groups, and the standard group each links to:
"   ltlKeyword     use as fn param buffer          -> Keyword
"   ltlStatement   return                          -> Statement
"   ltlConditional if else                         -> Conditional
"   ltlRepeat      for in                          -> Repeat
"   ltlLogical     and or not                      -> Keyword
"   ltlBlock       model data trainer              -> Structure
"   ltlModuleName  the name after model/data/trainer -> Type
"   ltlFuncName    the name after fn               -> Function
"   ltlBoolean     true false                      -> Boolean
"   ltlNone        none                            -> Constant
"   ltlBuiltin     forward, the steps, the Lightning hooks -> Function
"   ltlBinding     optimizer optimizers scheduler schedulers -> Function
"   ltlType        f64 f32 bf16 f16 i64 i32 u8 bool -> Type
"   ltlTensorType  a shaped type f32[B, 784]; names inside are ltlShapeDim -> Type
"   ltlNumber      10 60_000                       -> Number
"   ltlFloat       1e-3 0.5 2. .25                 -> Float
"   ltlString      "..."                           -> String
"   ltlEscape      \n \t \r \\ \" \0 \u{HEX}       -> SpecialChar
"   ltlPlaceholder {epoch} {val_loss:.2f} in a string -> Special
"   ltlComment     # to end of line                -> Comment
"   ltlOperator    + - * / % @ ** == != < <= > >= = -> ...  -> Operator
"   ltlDelimiter   . , : ;                         -> Delimiter
"
" model data trainer fn param buffer use as are keywords only where a
" declaration starts (the language reference says so: `data.vocab_size` and
" `f(model = 1)` use them as names), so they are matched only when a name
" follows (for trainer: `{`, after an optional name).

if exists("b:current_syntax")
  finish
endif

let s:cpo_save = &cpo
set cpo&vim

syn case match

" Plain keywords (reserved everywhere).
syn keyword ltlStatement   return
syn keyword ltlConditional if else
syn keyword ltlRepeat      for in
syn keyword ltlLogical     and or not
syn keyword ltlBoolean     true false
syn keyword ltlNone        none

" Steps, hooks and the special bindings with a meaning to the trainer.
syn keyword ltlBuiltin forward training_step validation_step test_step predict_step
syn keyword ltlBuiltin configure_optimizers
syn keyword ltlBuiltin on_fit_start on_fit_end on_train_start on_train_end
syn keyword ltlBuiltin on_train_epoch_start on_train_epoch_end
syn keyword ltlBuiltin on_validation_epoch_start on_validation_epoch_end
syn keyword ltlBuiltin on_test_epoch_start on_test_epoch_end
syn keyword ltlBuiltin on_before_optimizer_step on_after_backward on_before_backward
syn keyword ltlBuiltin on_train_batch_start on_train_batch_end on_validation_batch_end
syn keyword ltlBuiltin on_save_checkpoint on_load_checkpoint
syn keyword ltlBinding optimizer optimizers scheduler schedulers

" Contextual keywords: a declaration starts here.
syn match ltlBlock       "\<\%(model\|data\)\>\ze\s\+\h" nextgroup=ltlModuleName skipwhite
syn match ltlBlock       "\<trainer\>\ze\s*\%(\h\w*\s*\)\={" nextgroup=ltlModuleName skipwhite
syn match ltlModuleName  "\h\w*" contained
syn match ltlKeyword     "\<fn\>\ze\s\+\h" nextgroup=ltlFuncName skipwhite
syn match ltlFuncName    "\h\w*" contained
syn match ltlKeyword     "\<\%(param\|buffer\|use\)\>\ze\s\+\h"
syn match ltlKeyword     "\%(\<use\s\+[A-Za-z0-9_.]\+\s\+\)\@<=as\>\ze\s\+\h"

" Numbers.  Integers first: a float that starts at the same place wins.
syn match ltlNumber "\<\d[0-9_]*\>"
syn match ltlFloat  "\<\d[0-9_]*[eE][-+]\=\d[0-9_]*\>"
syn match ltlFloat  "\<\d[0-9_]*\.\d[0-9_]*\%([eE][-+]\=\d[0-9_]*\)\=\>"
syn match ltlFloat  "\<\d[0-9_]*\.\%([.A-Za-z0-9_]\)\@!"

" Operators and punctuation.  `...` and `.25` are defined after `.`, so they win.
syn match ltlDelimiter "[.,:;]"
syn match ltlOperator  "\*\*\|==\|!=\|<=\|>=\|->\|\.\.\.\|[-+*/%@<>=]"
syn match ltlFloat     "\%([A-Za-z0-9_.)\]]\)\@<!\.\d[0-9_]*\%([eE][-+]\=\d[0-9_]*\)\=\>"

" Types: a dtype, and a dtype with a shape `f32[B, 1, 28, 28]` as a whole.
" The dtypes are a match (not a keyword) so that the shaped type, defined
" later, wins where a `[` follows.
syn match  ltlType "\<\%(f64\|f32\|bf16\|f16\|i64\|i32\|u8\|bool\)\>"
syn region ltlTensorType matchgroup=ltlType
      \ start="\<\%(f64\|f32\|bf16\|f16\|i64\|i32\|u8\|bool\)\s*\["
      \ end="\]"
      \ contains=ltlShapeDim,ltlShapeNest,ltlNumber,ltlFloat,ltlOperator,ltlDelimiter,ltlComment,ltlString
syn region ltlShapeNest start="\[" end="\]" contained transparent
      \ contains=ltlShapeDim,ltlShapeNest,ltlNumber,ltlFloat,ltlOperator,ltlDelimiter,ltlComment,ltlString
syn match  ltlShapeDim "\<\h\w*\>" contained

" Strings: one line, with escapes and {name} / {name:fmt} placeholders.
syn region ltlString start=+"+ skip=+\\\\\|\\"+ end=+"+ end=+$+
      \ contains=ltlEscape,ltlEscapeError,ltlPlaceholder,@Spell
syn match  ltlEscapeError +\\.+ contained
syn match  ltlEscape      +\\[ntr\\"0]+ contained
syn match  ltlEscape      +\\u{\x\{1,6}}+ contained
syn match  ltlPlaceholder +{\h\w*\%(:[^}"]*\)\=}+ contained

" Comments.
syn keyword ltlTodo    TODO FIXME XXX NOTE contained
syn match   ltlComment "#.*$" contains=ltlTodo,@Spell

syn sync minlines=200

hi def link ltlKeyword      Keyword
hi def link ltlStatement    Statement
hi def link ltlConditional  Conditional
hi def link ltlRepeat       Repeat
hi def link ltlLogical      Keyword
hi def link ltlBlock        Structure
hi def link ltlModuleName   Type
hi def link ltlFuncName     Function
hi def link ltlBoolean      Boolean
hi def link ltlNone         Constant
hi def link ltlBuiltin      Function
hi def link ltlBinding      Function
hi def link ltlType         Type
hi def link ltlTensorType   Type
hi def link ltlShapeDim     Type
hi def link ltlNumber       Number
hi def link ltlFloat        Float
hi def link ltlString       String
hi def link ltlEscape       SpecialChar
hi def link ltlEscapeError  Error
hi def link ltlPlaceholder  Special
hi def link ltlComment      Comment
hi def link ltlTodo         Todo
hi def link ltlOperator     Operator
hi def link ltlDelimiter    Delimiter

let b:current_syntax = "ltl"

let &cpo = s:cpo_save
unlet s:cpo_save
