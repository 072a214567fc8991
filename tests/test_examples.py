"""The runnable examples do their jobs (smaller runs, the margins they claim)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import adversarial_robustness  # noqa: E402
import conditional_wgan_gp  # noqa: E402
import data_parallel  # noqa: E402
import force_matching  # noqa: E402
import interatomic_potential  # noqa: E402
import inverse_problem  # noqa: E402
import noise_conditional_score  # noqa: E402
import pinn_heat  # noqa: E402
import pinn_high_dim  # noqa: E402
import pinn_kovasznay  # noqa: E402
import pinn_plate  # noqa: E402
import pinn_poisson  # noqa: E402
import refine_noisy_input  # noqa: E402
import score_matching  # noqa: E402
import input_gradient_regularizers  # noqa: E402


def test_input_gradient_regularizers_train_the_weights_unlike_the_seeds():
    r = input_gradient_regularizers.main(["--steps", "150"])
    for name in ("1 gradient-norm penalty", "2 gradient-direction matching"):
        assert r[f"{name} seed change"] == 0.0 and r[f"{name} our change"] > 1e-3
    assert r["1 gradient-norm penalty with penalty"] < r["1 gradient-norm penalty plain fit"]
    assert r["2 gradient-direction matching with penalty"] > r["2 gradient-direction matching plain fit"]
    assert r["3 FGSM adversarial term with penalty"] < r["3 FGSM adversarial term plain fit"]


def test_force_matching_learns_forces_and_energies():
    r = force_matching.main(["--steps", "400", "--train", "400"])
    assert r["force_rmse"] < 0.3 * r["force_std"]
    assert r["energy_rmse"] < 0.3 * r["energy_std"]


def test_interatomic_potential_learns_forces_and_stress_beyond_energy_only():
    r = interatomic_potential.main(["--steps", "300", "--train", "40", "--repeats", "3", "--no-compile"])
    full, baseline = r["energies, forces, stress"], r["energies only"]
    assert full["force_rmse_mev_per_a"] < 0.5 * baseline["force_rmse_mev_per_a"]
    assert full["stress_rmse_mev_per_a3"] < 0.5 * baseline["stress_rmse_mev_per_a3"]


def test_inverse_problem_improves_psnr_by_5_db():
    assert inverse_problem.main(["--images", "2"])["gain_db"] > 5.0


def test_refining_noisy_inputs_leaves_the_model_alone():
    r = refine_noisy_input.main([])
    assert r["loss_after"] < 1e-6 * r["loss_before"]
    assert r["input_error_after"] < 0.1 * r["input_error_before"]
    assert r["model_unchanged"]


def test_adversarial_training_improves_robust_accuracy():
    r = adversarial_robustness.main(["--steps", "300"])
    assert r["adversarial training"]["pgd"] > r["standard training"]["pgd"] + 0.05


def test_data_parallel_example_equals_one_process():
    r = data_parallel.main(["--steps", "20", "--samples", "257"])
    assert r["replica_gap"] == 0.0 and r["vs_single"] < 1e-12


def test_pinn_poisson_converges():
    assert pinn_poisson.main(["--steps", "500"])["relative_l2"] < 0.2


def test_pinn_kovasznay_converges():
    r = pinn_kovasznay.main(["--steps", "600"])  # from about 1 at the start
    assert max(r["relative_l2_u"], r["relative_l2_v"], r["relative_l2_p"]) < 0.6


def test_pinn_plate_converges():
    assert pinn_plate.main(["--steps", "1500"])["relative_l2"] < 0.2


def test_pinn_heat_converges():
    assert pinn_heat.main(["--steps", "400"])["relative_l2"] < 0.2


def test_high_dimensional_pinn_trains_with_the_stochastic_laplacian():
    r = pinn_high_dim.main(["--steps", "100"])
    assert r["relative_l2"] < 0.2 and r["step_ms"]["hessian"] > r["step_ms"]["stde"]


def test_score_matching_learns_the_score():
    r = score_matching.main(["--steps", "600"])
    assert r["relative_error"] < 0.3


def test_noise_conditional_score_model_learns_scores_and_samples_the_mixture():
    r = noise_conditional_score.main(["--steps", "800"])
    assert r["score_error_sigma_0.1"] < 0.3 and r["score_error_sigma_1.0"] < 0.3
    assert r["weights_error"] < 0.1 and r["mmd"] < 0.1 * r["mmd_noise_vs_data"]


def test_conditional_wgan_gp_learns_both_conditionals():
    r = conditional_wgan_gp.main(["--steps", "600"])
    for label in (0, 1):
        assert r["after"][f"mmd_{label}"] < 0.3 * r["before"][f"mmd_{label}"]
