"""Prediction with test-time augmentation, the confusion matrix, mistakes, and the figures."""

import torch

import analysis
import checkpoints
import mnist
import plots
import utils
from conftest import TINY_TEST
from model import MNISTNet


def test_predict_covers_the_whole_test_set(tiny_root):
    _, test_loader = utils.get_data_loaders(data_dir=tiny_root, test_batch_size=16)
    predictions, confidences, targets = analysis.predict(
        MNISTNet(), test_loader, torch.device("cpu")
    )
    assert predictions.shape == confidences.shape == targets.shape == (TINY_TEST,)
    assert torch.equal(targets, torch.arange(TINY_TEST) % 10)
    assert ((confidences >= 0.1) & (confidences <= 1)).all()  # a max over 10 probabilities


def test_confusion_matrix_counts():
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 2, 0, 2])
    matrix = analysis.confusion_matrix(predictions, targets, num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert matrix.sum() == len(targets)
    torch.testing.assert_close(
        analysis.per_class_accuracy(matrix), torch.tensor([50.0, 100.0, 200 / 3])
    )


def test_confusion_matrix_of_a_model_sums_to_the_set_size(tiny_root):
    _, test_loader = utils.get_data_loaders(data_dir=tiny_root)
    predictions, _, targets = analysis.predict(MNISTNet(), test_loader, torch.device("cpu"))
    matrix = analysis.confusion_matrix(predictions, targets)
    assert matrix.shape == (10, 10) and matrix.sum() == TINY_TEST
    assert matrix.sum(dim=1).tolist() == [4] * 10  # the tiny labels cycle 0..9


def test_misclassified_picks_only_mistakes_most_confident_first():
    targets = torch.tensor([1, 2, 3, 4, 5])
    predictions = torch.tensor([1, 7, 3, 9, 0])
    confidences = torch.tensor([0.99, 0.6, 0.9, 0.95, 0.7])
    assert analysis.misclassified(predictions, confidences, targets).tolist() == [3, 4, 1]
    assert analysis.misclassified(predictions, confidences, targets, n=2).tolist() == [3, 4]


def test_gallery_shows_the_misclassified_images(tiny_root, tmp_path):
    _, test_loader = utils.get_data_loaders(data_dir=tiny_root)
    predictions, confidences, targets = analysis.predict(
        MNISTNet(), test_loader, torch.device("cpu")
    )
    wrong = int((predictions != targets).sum())
    fig = plots.plot_misclassified(
        test_loader.dataset, predictions, confidences, targets, n=20, path=tmp_path / "g.png"
    )
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == min(20, wrong) > 0
    for title in titles:
        true, predicted = title.split(" (")[0].split(" -> ")
        assert true != predicted
    assert (tmp_path / "g.png").stat().st_size > 5_000


def test_confusion_matrix_plot_labels_every_cell(tmp_path):
    matrix = torch.arange(100).view(10, 10)
    fig = plots.plot_confusion_matrix(matrix, path=tmp_path / "cm.png")
    ax = fig.axes[0]
    assert len(ax.texts) == 100 and {t.get_text() for t in ax.texts} == {str(i) for i in range(100)}
    assert ax.get_xlabel() == "predicted label" and ax.get_ylabel() == "true label"
    assert (tmp_path / "cm.png").is_file()


def test_confusion_matrix_counts_stay_readable_on_dark_cells():
    matrix = torch.eye(10, dtype=torch.long) * 900
    matrix[3, 5] = 40  # the darkest error cell
    matrix[3, 8] = 2
    texts = {t.get_position(): t for t in plots.plot_confusion_matrix(matrix).axes[0].texts}
    assert texts[(5, 3)].get_color() == "white"
    assert texts[(8, 3)].get_color() == texts[(3, 3)].get_color() == "black"


def test_sample_grid_titles_each_image_with_its_label():
    labels = torch.arange(12) % 10
    fig = plots.plot_samples(torch.zeros(12, 1, 28, 28), labels, ncols=4, nrows=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [str(int(label)) for label in labels[:8]]


def test_curves_plot_has_four_panels_and_partial_histories(tmp_path):
    history = {
        "train_loss": [1.0, 0.5, 0.4],
        "train_acc": [80, 90, 95],
        "test_loss": [0.6, 0.5],
        "test_acc": [85, 92],
    }
    fig = plots.plot_curves(history, tmp_path / "c.png")
    assert [ax.get_title() for ax in fig.axes] == [title for _, title in plots.CURVE_PANELS]
    assert [len(ax.lines[0].get_xdata()) for ax in fig.axes] == [3, 3, 2, 2]
    assert (tmp_path / "c.png").is_file()


def test_all_finite_spots_nan_weights():
    model = MNISTNet()
    assert checkpoints.all_finite(model)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    assert not checkpoints.all_finite(model)


def test_shifted_views_move_the_image_by_whole_pixels():
    x = torch.full((1, 1, 28, 28), -1.0)
    x[0, 0, 10, 12] = 5.0
    background = (0 - mnist.MNIST_MEAN) / mnist.MNIST_STD
    views = analysis.shifted_views(x, 2)
    assert len(views) == 5 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x)
    peaks = {tuple((v[0, 0] == 5.0).nonzero()[0].tolist()) for v in views}
    assert peaks == {(10, 12), (12, 12), (8, 12), (10, 14), (10, 10)}
    assert views[1][0, 0, :2].eq(background).all()  # moved down: the top rows are new background
    assert views[1][0, 0, 2:].eq(x[0, 0, :-2]).all()
    assert analysis.shifted_views(x, 0) == [x]


def test_predict_with_tta_averages_the_views(tiny_root):
    _, test_loader = utils.get_data_loaders(data_dir=tiny_root, test_batch_size=16)
    torch.manual_seed(0)
    model = MNISTNet().eval()
    plain = analysis.predict(model, test_loader, torch.device("cpu"))
    tta = analysis.predict(model, test_loader, torch.device("cpu"), tta_shift=1)
    assert torch.equal(plain[2], tta[2])
    x, _ = next(iter(test_loader))
    with torch.inference_mode():
        expected = (
            torch.stack([model(v).exp() for v in analysis.shifted_views(x, 1)]).mean(0).max(1)
        )
    torch.testing.assert_close(tta[1][:16], expected.values)
    assert torch.equal(tta[0][:16], expected.indices)


def test_curves_of_one_epoch_have_whole_epoch_ticks_and_stop_at_100_percent():
    history = dict(train_loss=[0.2], train_acc=[99.98], test_loss=[0.03], test_acc=[100.0])
    fig = plots.plot_curves(history)
    for ax, (key, _) in zip(fig.axes, plots.CURVE_PANELS):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), key
        if "acc" in key:
            assert ax.get_ylim()[1] == 100, key
