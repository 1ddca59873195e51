"""The `tunesmith` command. Each command lives in its own thin module and imports heavy libraries lazily,
so `tunesmith --help` stays instant. A ``UserError`` becomes one line on stderr and exit code 2."""

from __future__ import annotations

import errno
import sys

import typer

from tunesmith.cli import advise, bakeoff, check, demo, eval, export, generate, grade, serve, train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune pretrained language models on your own examples.",
)
app.command("train")(train.train_command)
app.command("check")(check.check_command)
app.command("generate")(generate.generate_command)
app.command("chat")(generate.chat_command)
app.command("demo")(demo.demo_command)
app.command("export")(export.export_command)
app.command("eval")(eval.eval_command)
app.command("serve")(serve.serve_command)
app.command("bakeoff")(bakeoff.bakeoff_command)
app.command("advise")(advise.advise_command)
app.command("grade")(grade.grade_command)


def main(argv: list[str] | None = None) -> None:
    from tunesmith import console
    from tunesmith.errors import UserError

    try:
        code = app(args=argv, prog_name="tunesmith", standalone_mode=False)
        # Outside standalone mode, click returns the code of a `raise typer.Exit(code)` instead of exiting.
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as e:
        console.error(str(e))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.error("interrupted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        console.error("aborted")
        sys.exit(1)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        console.error(f"no space left on the disk{where}; free some space and run the command again")
        sys.exit(2)
    except Exception as e:  # click usage errors are ClickException subclasses
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
