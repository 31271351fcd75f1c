;;; ltl-mode.el --- Major mode for LTL training programs  -*- lexical-binding: t; -*-

;; Version: 0.1
;; Package-Requires: ((emacs "25.1"))
;; Keywords: languages
;; URL: docs/editors.md of the LTL repository

;;; Commentary:

;; A major mode for `.ltl' files: the language of the LTL compiler, which
;; trains neural networks the way PyTorch Lightning organises them.  The
;; language reference is docs/language.md.
;;
;; Install: put this file on `load-path' and
;;     (require 'ltl-mode)
;;
;; Highlighted (the same classes as the Vim and VS Code support):
;;   keywords     use as fn param buffer return if else for in and or not
;;                and the block kinds model data trainer  -> font-lock-keyword-face
;;   declared names  model MLP, data Pairs -> font-lock-type-face,
;;                   fn swish -> font-lock-function-name-face
;;   constants    true false none         -> font-lock-constant-face
;;   steps, hooks, optimizer(s), scheduler(s) -> font-lock-builtin-face
;;   types        f64 f32 bf16 f16 i64 i32 u8 bool, and shapes f32[B, 784]
;;                                        -> font-lock-type-face
;;   numbers      10 60_000 1e-3 0.5 2. .25 -> `ltl-number-face'
;;   strings      "..."                   -> font-lock-string-face, with
;;                escapes -> `ltl-escape-face', {epoch} -> `ltl-placeholder-face'
;;   comments     # to end of line        -> font-lock-comment-face
;;   operators    + - * / % @ ** == != < <= > >= = -> ... -> `ltl-operator-face'
;;   punctuation  . , : ;                 -> `ltl-delimiter-face'
;;
;; `model data trainer fn param buffer use as' are keywords only where a
;; declaration starts, so they are highlighted only when a name follows (for
;; `trainer': `{' after an optional name): `data.vocab_size' and
;; `f(model = 1)' stay plain.
;;
;; Indentation is by bracket depth: `ltl-indent-offset' (4) columns for each
;; earlier line that left a `{', `(' or `[' open; a line starting with a
;; closing bracket lines up with the line of the bracket it closes.

;;; Code:

(defgroup ltl nil
  "Major mode for LTL training programs."
  :group 'languages
  :prefix "ltl-")

(defcustom ltl-indent-offset 4
  "Columns of indentation per open bracket in `ltl-mode'."
  :type 'integer
  :safe #'integerp)

(defun ltl--inherit (parents)
  "A face attribute list inheriting the first face of PARENTS that exists.
Faces such as `font-lock-number-face' are newer than some Emacs versions."
  (let ((parent (catch 'found
                  (dolist (face parents)
                    (when (facep face) (throw 'found face))))))
    (and parent (list :inherit parent))))

(defface ltl-number-face
  `((t ,@(ltl--inherit '(font-lock-number-face font-lock-constant-face))))
  "Face for LTL numbers: 10, 60_000, 1e-3, .25.")
(defface ltl-escape-face
  `((t ,@(ltl--inherit '(font-lock-escape-face font-lock-regexp-grouping-backslash))))
  "Face for escapes in LTL strings: \\n, \\\", \\u{1F600}.")
(defface ltl-placeholder-face
  `((t ,@(ltl--inherit '(font-lock-variable-name-face))))
  "Face for {name} and {name:fmt} placeholders in LTL strings.")
(defface ltl-operator-face
  `((t ,@(ltl--inherit '(font-lock-operator-face))))
  "Face for LTL operators: + - * / % @ ** == != < <= > >= = -> ...")
(defface ltl-delimiter-face
  `((t ,@(ltl--inherit '(font-lock-delimiter-face))))
  "Face for LTL punctuation: . , : ;")

(defconst ltl-keywords
  '("return" "if" "else" "for" "in" "and" "or" "not")
  "Keywords reserved everywhere.")

(defconst ltl-constants '("true" "false" "none")
  "Constant keywords.")

(defconst ltl-dtypes '("f64" "f32" "bf16" "f16" "i64" "i32" "u8" "bool")
  "Element types.")

(defconst ltl-builtins
  '("forward" "training_step" "validation_step" "test_step" "predict_step"
    "configure_optimizers"
    "on_fit_start" "on_fit_end" "on_train_start" "on_train_end"
    "on_train_epoch_start" "on_train_epoch_end"
    "on_validation_epoch_start" "on_validation_epoch_end"
    "on_test_epoch_start" "on_test_epoch_end"
    "on_before_optimizer_step" "on_after_backward" "on_before_backward"
    "on_train_batch_start" "on_train_batch_end" "on_validation_batch_end"
    "on_save_checkpoint" "on_load_checkpoint"
    "optimizer" "optimizers" "scheduler" "schedulers")
  "Steps, hooks and bindings with a meaning to the trainer.")

(defconst ltl--name "[A-Za-z_][A-Za-z0-9_]*")
(defconst ltl--digits "[0-9][0-9_]*")
(defconst ltl--exponent (concat "[eE][-+]?" ltl--digits))

(defvar ltl-mode-syntax-table
  (let ((st (make-syntax-table)))
    (modify-syntax-entry ?# "<" st)
    (modify-syntax-entry ?\n ">" st)
    (modify-syntax-entry ?\" "\"" st)
    (modify-syntax-entry ?\\ "\\" st)
    (modify-syntax-entry ?_ "_" st)
    (modify-syntax-entry ?' "." st)
    (dolist (c '(?+ ?- ?* ?/ ?% ?@ ?< ?> ?= ?! ?. ?, ?: ?\;))
      (modify-syntax-entry c "." st))
    st)
  "Syntax table for `ltl-mode'.")

(defun ltl--in-string-p (pos)
  "Non-nil when POS is inside a string."
  (nth 3 (save-excursion (syntax-ppss pos))))

(defun ltl--match-in-string (regexp limit)
  "Search for REGEXP before LIMIT, only inside strings."
  (let (found)
    (while (and (not found) (re-search-forward regexp limit t))
      (when (ltl--in-string-p (match-beginning 0))
        (setq found t)))
    found))

(defun ltl--match-escape (limit)
  "Font-lock matcher for string escapes before LIMIT."
  (ltl--match-in-string "\\\\\\(?:[ntr\\\\\"0]\\|u{[0-9A-Fa-f]\\{1,6\\}}\\)" limit))

(defun ltl--match-placeholder (limit)
  "Font-lock matcher for {name} and {name:fmt} placeholders before LIMIT."
  (ltl--match-in-string (concat "{" ltl--name "\\(?::[^}\"\n]*\\)?}") limit))

(defun ltl--match-shape (limit)
  "Font-lock matcher for the `[...]' of a shaped type such as f32[B, 784].
Sets the match to the brackets and what is between them, before LIMIT."
  (let (found)
    (while (and (not found)
                (re-search-forward
                 (concat "\\_<" (regexp-opt ltl-dtypes) "[ \t]*\\(\\[\\)") limit t))
      (let* ((open (match-beginning 1))
             (close (and (not (nth 8 (save-excursion (syntax-ppss open))))
                         (ignore-errors (scan-lists open 1 0)))))
        (when close
          (set-match-data (list open close))
          (goto-char (1+ open))
          (setq found t))))
    found))

(defconst ltl-font-lock-keywords
  `(;; Declarations: `model NAME', `data NAME', `trainer [NAME] {', `fn NAME'.
    (,(concat "\\_<\\(model\\|data\\)[ \t]+\\(" ltl--name "\\)")
     (1 font-lock-keyword-face) (2 font-lock-type-face))
    (,(concat "\\_<\\(trainer\\)\\_>[ \t]*\\(" ltl--name "\\)?[ \t]*{")
     (1 font-lock-keyword-face) (2 font-lock-type-face nil t))
    (,(concat "\\_<\\(fn\\)[ \t]+\\(" ltl--name "\\)")
     (1 font-lock-keyword-face) (2 font-lock-function-name-face))
    (,(concat "\\_<\\(param\\|buffer\\|use\\)[ \t]+" ltl--name)
     (1 font-lock-keyword-face))
    (,(concat "\\_<use[ \t]+[A-Za-z0-9_.]+[ \t]+\\(as\\)[ \t]+" ltl--name)
     (1 font-lock-keyword-face))
    (,(regexp-opt ltl-keywords 'symbols) . font-lock-keyword-face)
    (,(regexp-opt ltl-constants 'symbols) . font-lock-constant-face)
    (,(regexp-opt ltl-builtins 'symbols) . font-lock-builtin-face)
    (,(regexp-opt ltl-dtypes 'symbols) . font-lock-type-face)
    ;; Strings: escapes and placeholders over the string face.
    (ltl--match-escape (0 'ltl-escape-face t))
    (ltl--match-placeholder (0 'ltl-placeholder-face t))
    ;; Numbers, floats before integers.
    (,(concat "\\_<" ltl--digits "\\." ltl--digits "\\(?:" ltl--exponent "\\)?\\_>")
     . 'ltl-number-face)
    (,(concat "\\_<" ltl--digits ltl--exponent "\\_>") . 'ltl-number-face)
    (,(concat "\\_<\\(" ltl--digits "\\.\\)\\(?:[^.A-Za-z0-9_]\\|$\\)")
     (1 'ltl-number-face))
    (,(concat "\\(?:^\\|[^].)A-Za-z0-9_]\\)\\(\\." ltl--digits
              "\\(?:" ltl--exponent "\\)?\\)\\_>")
     (1 'ltl-number-face))
    (,(concat "\\_<" ltl--digits "\\_>") . 'ltl-number-face)
    ;; Operators, then punctuation.
    ("\\*\\*\\|==\\|!=\\|<=\\|>=\\|->\\|\\.\\.\\.\\|[-+*/%@<>=]" . 'ltl-operator-face)
    ("[.,:;]" . 'ltl-delimiter-face)
    ;; What is left of a shape, `[B, 784]' after a dtype, is part of the type.
    (ltl--match-shape (0 font-lock-type-face keep)))
  "Font-lock keywords for `ltl-mode'.")

(defun ltl--indent-level ()
  "The bracket depth that sets the indentation of the current line.
It counts the lines that hold a bracket still open at the start of the
line's code, after any closing brackets it starts with."
  (save-excursion
    (back-to-indentation)
    (skip-chars-forward "])} \t" (line-end-position))
    (let ((ppss (syntax-ppss))
          (lines nil))
      (dolist (open (nth 9 ppss))
        (let ((bol (progn (goto-char open) (line-beginning-position))))
          (unless (memq bol lines)
            (push bol lines))))
      (length lines))))

(defun ltl-indent-line ()
  "Indent the current line of LTL by bracket depth."
  (interactive)
  (let ((target (* ltl-indent-offset (ltl--indent-level)))
        (offset (- (current-column) (current-indentation))))
    ;; `indent-line-to' keeps a right-width indentation even with tabs in it.
    (unless (and (= (current-indentation) target)
                 (not (save-excursion
                        (beginning-of-line)
                        (looking-at "[ ]*\t"))))
      (save-excursion
        (beginning-of-line)
        (delete-horizontal-space)
        (indent-to target)))
    (if (> offset 0)
        (move-to-column (+ target offset))
      (back-to-indentation))))

(defvar ltl-imenu-generic-expression
  `(("Models" ,(concat "^\\s-*model[ \t]+\\(" ltl--name "\\)") 1)
    ("Data" ,(concat "^\\s-*data[ \t]+\\(" ltl--name "\\)") 1)
    ("Functions" ,(concat "^\\s-*fn[ \t]+\\(" ltl--name "\\)") 1))
  "Imenu entries for `ltl-mode'.")

;;;###autoload
(define-derived-mode ltl-mode prog-mode "LTL"
  "Major mode for editing LTL training programs.

\\{ltl-mode-map}"
  :syntax-table ltl-mode-syntax-table
  (setq-local comment-start "# ")
  (setq-local comment-end "")
  (setq-local comment-start-skip "#+[ \t]*")
  (setq-local font-lock-defaults '(ltl-font-lock-keywords nil nil))
  (setq-local font-lock-multiline t)
  (setq-local indent-line-function #'ltl-indent-line)
  (setq-local indent-tabs-mode nil)
  (setq-local tab-width ltl-indent-offset)
  (setq-local electric-indent-chars (append '(?\} ?\) ?\]) electric-indent-chars))
  (setq-local imenu-generic-expression ltl-imenu-generic-expression))

;;;###autoload
(add-to-list 'auto-mode-alist '("\\.ltl\\'" . ltl-mode))

(provide 'ltl-mode)

;;; ltl-mode.el ends here
