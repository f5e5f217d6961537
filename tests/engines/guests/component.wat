;; Core module of the test component (see component.wit).  argv[1] picks what it does:
;;   echo   prints argv[2..] and then the environment (NAME=value), one per line; returns ok
;;   fail   returns err (exit status 1)
;;   trap   executes `unreachable`
;;   grow   grows memory by 16 MiB; returns err when that is refused
(module
  (import "wasi:cli/environment@0.2.0" "get-arguments" (func $get_args (param i32)))
  (import "wasi:cli/environment@0.2.0" "get-environment" (func $get_env (param i32)))
  (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $get_stdout (result i32)))
  (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush"
    (func $write (param i32 i32 i32 i32)))
  (memory (export "memory") 2)
  ;; 0: "\n", 1: "=", 16..28: write's result, 32..40: argv list, 40..48: env list
  (data (i32.const 0) "\n=")
  (global $heap (mut i32) (i32.const 65536))
  (global $out (mut i32) (i32.const 0))

  ;; A bump allocator is all the host needs to hand over argv and env.
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $ptr) (local.get 3)))
    (block $done
      (loop $more
        (br_if $done (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $more)))
    (local.get $ptr))

  (func $emit (param $ptr i32) (param $len i32)
    (call $write (global.get $out) (local.get $ptr) (local.get $len) (i32.const 16)))

  (func $echo (param $argv i32) (param $argc i32)
    (local $i i32) (local $env i32) (local $n i32) (local $e i32)
    (local.set $i (i32.const 2))
    (block $done
      (loop $args
        (br_if $done (i32.ge_u (local.get $i) (local.get $argc)))
        (local.set $e (i32.add (local.get $argv) (i32.mul (local.get $i) (i32.const 8))))
        (call $emit (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)))
        (call $emit (i32.const 0) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $args)))
    (call $get_env (i32.const 40))
    (local.set $env (i32.load (i32.const 40)))
    (local.set $n (i32.load (i32.const 44)))
    (local.set $i (i32.const 0))
    (block $done
      (loop $vars
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $e (i32.add (local.get $env) (i32.mul (local.get $i) (i32.const 16))))
        (call $emit (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)))
        (call $emit (i32.const 1) (i32.const 1))
        (call $emit (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e)))
        (call $emit (i32.const 0) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $vars))))

  (func (export "wasi:cli/run@0.2.0#run") (result i32)
    (local $argv i32) (local $argc i32) (local $cmd i32)
    (global.set $out (call $get_stdout))
    (call $get_args (i32.const 32))
    (local.set $argv (i32.load (i32.const 32)))
    (local.set $argc (i32.load (i32.const 36)))
    (if (i32.lt_u (local.get $argc) (i32.const 2)) (then (return (i32.const 0))))
    ;; The first letter of argv[1] is enough to tell the commands apart.
    (local.set $cmd (i32.load8_u (i32.load offset=8 (local.get $argv))))
    (if (i32.eq (local.get $cmd) (i32.const 0x66)) (then (return (i32.const 1))))
    (if (i32.eq (local.get $cmd) (i32.const 0x74)) (then unreachable))
    (if (i32.eq (local.get $cmd) (i32.const 0x67))
      (then (return (i32.eq (memory.grow (i32.const 256)) (i32.const -1)))))
    (call $echo (local.get $argv) (local.get $argc))
    (i32.const 0))
)
